"""Build what a run trains: the data loaders, the tokenizer folder, the model and the device.

The model's vocabulary and special-token ids come from the tokenizer the shards were packed with,
unless `model.overrides` says otherwise, so a preset trains on any packed data as it is.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from tnlm.data.loader import TokenLoader
from tnlm.data.pack import tokenizer_record
from tnlm.errors import ConfigError, DataError
from tnlm.models.registry import PRESETS, create_model, load_config
from tnlm.training.config import DataSection, ModelSection, TrainConfig
from tnlm.training.parallelize import supports_packed_documents


@dataclass(frozen=True)
class DataInfo:
    """What the shards' meta.json says, and where their tokenizer is."""

    path: Path
    vocab_size: int
    eos_id: int
    train_tokens: int
    val_tokens: int
    tokenizer: Path

    def fingerprint(self) -> dict:
        """What identifies the data of a run (not where it lies)."""
        return {"vocab_size": self.vocab_size, "train_tokens": self.train_tokens, "val_tokens": self.val_tokens}


def read_data_info(cfg: DataSection) -> DataInfo:
    path = Path(cfg.path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        what = "does not exist" if not path.exists() else "has no meta.json"
        raise ConfigError(f"data.path {path} {what}: give the output folder of `tnlm data pack`")
    meta = json.loads(meta_file.read_text())
    tokenizer = Path(cfg.tokenizer) if cfg.tokenizer else _recorded_tokenizer(path, meta["tokenizer"])
    if not (tokenizer / "tokenizer.json").is_file():
        raise ConfigError(
            f"the tokenizer of {path} ({tokenizer}) has no tokenizer.json: set data.tokenizer=FOLDER to the "
            "folder `tnlm tokenizer train` wrote (the final model directory carries a copy of it)"
        )
    record = tokenizer_record(Tokenizer.from_file(str(tokenizer / "tokenizer.json")), tokenizer)
    packed_with = meta.get("tokenizer_sha256", record["tokenizer_sha256"])
    if record["tokenizer_sha256"] != packed_with or record["max_id"] + 1 != int(meta["vocab_size"]):
        raise ConfigError(f"the tokenizer at {tokenizer} is not the one {path} was packed with: set "
                          "data.tokenizer to that folder (the final model directory carries a copy of it)")
    splits = meta["splits"]
    return DataInfo(path=path, vocab_size=int(meta["vocab_size"]), eos_id=int(meta["eos_id"]),
                    train_tokens=int(splits["train"]["tokens"]), val_tokens=int(splits["val"]["tokens"]),
                    tokenizer=tokenizer)  # fmt: skip


def _recorded_tokenizer(data: Path, recorded: str) -> Path:
    """The tokenizer folder meta.json names. `tnlm data pack` records the path as it was given, relative
    to where it ran, which was most likely an ancestor of the shard folder: look there too."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path
    for ancestor in data.resolve().parents:
        if (ancestor / path / "tokenizer.json").is_file():
            return ancestor / path
    return path


def build_loaders(
    cfg: DataSection, *, seed: int, rank: int = 0, world_size: int = 1
) -> tuple[TokenLoader, TokenLoader]:
    """(train loader, validation loader); the validation loader always starts at its first batch."""
    common = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, mode=cfg.mode, rank=rank, world_size=world_size)
    train = TokenLoader(cfg.path, split="train", seed=seed, shuffle=cfg.shuffle, **common)
    try:
        val = TokenLoader(cfg.path, split="val", seed=seed, shuffle=False, **common)
    except DataError as e:
        raise ConfigError(
            f"the validation split of {cfg.path} cannot fill one batch of {cfg.batch_size} x {cfg.seq_len} "
            f"tokens ({e}): repack with a larger --val-fraction, or lower data.batch_size/data.seq_len"
        ) from None
    return train, val


def special_ids(tokenizer: Path) -> dict[str, int]:
    """pad/bos/eos ids of a tokenizer folder, for the model config."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    return {k: v for k, v in ids.items() if v is not None}


def build_model(cfg: ModelSection, *, data: DataInfo, seed: int) -> nn.Module:
    """A float32 model in training mode, on the CPU; its vocabulary covers the data's."""
    is_preset = cfg.name in PRESETS
    _check_overrides(cfg)
    overrides = dict(cfg.overrides)
    if is_preset:
        overrides = {"vocab_size": data.vocab_size, **special_ids(data.tokenizer), **overrides}
    try:
        config = load_config(cfg.name, overrides=overrides)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model.overrides do not make a valid {cfg.name} config: {e}") from None
    if config.vocab_size < data.vocab_size:
        raise ConfigError(
            f"the model's vocab_size ({config.vocab_size}) is smaller than the tokenizer's ({data.vocab_size}): "
            "drop model.overrides.vocab_size, or pack the data with a smaller tokenizer"
        )
    model = create_model(cfg.name, overrides=overrides, seed=seed)
    return model.train()


def _check_overrides(cfg: ModelSection) -> None:
    if not cfg.overrides:
        return
    config = load_config(cfg.name)
    own = [p for p in inspect.signature(type(config).__init__).parameters if p not in ("self", "kwargs")]
    known = set(config.to_dict()) | set(own)
    for key in cfg.overrides:
        if key not in known:
            raise ConfigError(
                f"unknown model config field model.overrides.{key}; {config.model_type} knows: {', '.join(own)}"
            )


def check_packed_support(model: nn.Module, cfg: DataSection) -> None:
    if cfg.mode == "varlen" and not supports_packed_documents(model):
        raise ConfigError(
            f"data.mode=varlen packs documents with cu_seqlens, which {type(model).__name__} does not take; "
            "use data.mode=windows for this family"
        )


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={setting} but no CUDA device is available; use train.device=cpu")
    return device


def pick_precision(setting: str, device: torch.device) -> str:
    """float32 or bf16 (bf16 matrix products are ~200x slower on most CPUs)."""
    if setting == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    return setting


def describe(model: nn.Module, config: TrainConfig) -> str:
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    family = model.config.model_type
    frozen = f", {trainable / 1e6:.3f}M of them trained" if trainable < n else ""
    return f"{config.model.name} ({family}, {n / 1e6:.1f}M parameters{frozen})"

