"""The one place that reads a model directory: config.json, then the weights, each checked before use.

Every problem a user can have with a directory (missing, not JSON, not UTF-8, truncated weights,
weights of another shape, tensors missing or left over) is a CheckpointError that names the file
and says what to do, raised before any weight is used.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import logging as hf_logging

from tnlm.errors import CheckpointError

_SAVE_HINT = "save one with model.save_pretrained(DIR)"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bar while a model directory is read or written under a command's own output."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def read_config_json(path: Path) -> dict:
    """The object in DIR/config.json; CheckpointError for a missing, undecodable or non-object file."""
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist; check the path")
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path} has no config.json; it is not a model directory ({_SAVE_HINT})")
    try:
        raw = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start}); restore it from the "
                              "original checkpoint") from None  # fmt: skip
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); restore it from the original checkpoint") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file} holds a JSON {type(raw).__name__}, not an object of config fields; "
                              "restore it from the original checkpoint")  # fmt: skip
    return raw


def _safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; a truncated or corrupt file is a CheckpointError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({e}); it may be truncated: copy or download it again"
        ) from None


def check_weight_files(path: Path, model_class: type[PreTrainedModel], config: PreTrainedConfig) -> None:
    """Before loading: the weight files are there, readable, and their shapes are the config's."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")):
            return  # PyTorch pickles: read (weights only) and checked by from_pretrained itself
        raise CheckpointError(f"{path} has a config.json but no model.safetensors; the checkpoint is incomplete")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    for file in files:
        for key, shape in _safetensors_shapes(file).items():
            if key in expected and shape != expected[key]:
                raise CheckpointError(
                    f"{file.name}: tensor {key} has shape {shape} but config.json implies {expected[key]}; "
                    "the weights belong to a model of another size"
                )


def _names(keys: set[str], limit: int = 10) -> str:
    listed = sorted(keys)
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


TP_LOGGER = "transformers.distributed.tensor_parallel"


def load_weights(
    model_class: type[PreTrainedModel],
    path: Path,
    *,
    config: PreTrainedConfig,
    dtype: torch.dtype | str,
    strict: bool = True,
) -> PreTrainedModel:
    """`model_class.from_pretrained` with `config`. strict: a tensor the model needs but the files lack,
    or one they hold that the model has no place for, is a CheckpointError listing them (otherwise
    transformers would initialise the missing ones at random and only log it). strict=False accepts
    both, for conversions that fill or drop tensors on purpose."""
    check_weight_files(path, model_class, config)
    # strict: the error below says it in one line; transformers' report table would repeat it. Raising that
    # level makes transformers check the (empty) tensor-parallel plan and warn that no layer is sharded:
    # that logger is quietened too.
    loggers = [hf_logging.get_logger(n) for n in (("transformers.modeling_utils", TP_LOGGER) if strict else ())]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        model, info = model_class.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True)
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
    missing, unexpected = set(info["missing_keys"]), set(info["unexpected_keys"])
    if strict and (missing or unexpected):
        found = [f"missing {len(missing)}: {_names(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {_names(unexpected)}" if unexpected else ""]  # fmt: skip
        raise CheckpointError(
            f"{path}: the weights do not match a {config.model_type} model ({'; '.join(f for f in found if f)}); "
            "the checkpoint is incomplete or of another architecture. Restore it, or load with strict=False "
            "to accept missing tensors at random initialisation"
        )
    return model
