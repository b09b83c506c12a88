"""LoRA through peft, for every tnlm family: default target modules, adapters in peft's format, merging.

Default targets (the linear layers of every block; the head and the embedding stay frozen):

    transnormer       qkvu_proj (q, k, v and the output gate u, one fused matrix, the released layout),
                      out_proj, and SGLU's l1, l2, l3
    tnlm_transformer  q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
    tnlm_infini       the same as the Transformer (Infini-attention's gate stays frozen)

Chat markers that had to be added to the tokenizer get trainable rows (peft's `trainable_token_indices`,
in the embedding and in an untied head): without them the new markers would stay at their initial
mean vector and the model could not tell a turn's start from its end.

An adapter folder holds what peft writes (adapter_config.json, adapter_model.safetensors; the marker rows
are in it as whole rows), the tokenizer the run trained with, and finetune.json (the base model, and the
embedding size before and after the markers). `PeftModel.from_pretrained(base, folder)` loads it as it
is; when markers were added, the base's embedding must first grow to the recorded size, which
`load_adapter` and `merge_lora` do (the resized embedding is not copied into the adapter: it would make
a 7B model's adapter a gigabyte larger).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from tnlm.errors import CheckpointError, ConfigError
from tnlm.training.checkpoint import TOKENIZER_FILES, export_model
from tnlm.training.config import LoraSection
from tnlm.training.finetune.tokens import AddedTokens, init_new_rows

DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "transnormer": ("qkvu_proj", "out_proj", "l1", "l2", "l3"),
    "tnlm_transformer": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "tnlm_infini": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
RECORD = "finetune.json"


def linear_names(model: nn.Module) -> list[str]:
    """The names (last part) of the model's linear layers, what target_modules can name."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})


def target_modules(model: nn.Module, requested: Sequence[str] | None) -> list[str]:
    """The linear layers to adapt: `requested`, each checked against the model, or the family's default."""
    family = model.config.model_type
    if requested is None:
        if family not in DEFAULT_TARGETS:
            raise ConfigError(f"no default LoRA targets for {family}: set lora.target_modules to some of "
                              f"{', '.join(linear_names(model))}")  # fmt: skip
        return list(DEFAULT_TARGETS[family])
    have = linear_names(model)
    missing = [t for t in requested if t not in have]
    if missing:
        raise ConfigError(f"lora.target_modules names {', '.join(missing)}, which this {family} model does not "
                          f"have; its linear layers are: {', '.join(have)}")  # fmt: skip
    return list(requested)


def _peft():
    try:
        import peft
    except ImportError:
        raise ConfigError("LoRA needs the peft library: pip install 'tnlm[finetune]' (or fine-tune every weight "
                          "with method=full)") from None  # fmt: skip
    return peft


def apply_lora(model: nn.Module, cfg: LoraSection, *, added: AddedTokens | None = None) -> nn.Module:
    """A peft model around `model` (changed in place): LoRA on the targets, rows of added tokens
    trainable, everything else frozen."""
    peft = _peft()
    tokens = None
    if added is not None and added.new_ids:
        tokens = {"embed_tokens": list(added.new_ids)}
        if not model.config.tie_word_embeddings:
            tokens["lm_head"] = list(added.new_ids)
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                             target_modules=target_modules(model, cfg.target_modules),
                             trainable_token_indices=tokens, task_type="CAUSAL_LM")  # fmt: skip
    with warnings.catch_warnings():  # peft asks the model about gradient checkpointing by a deprecated name
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(model, config)


def save_adapter(model: nn.Module, *, tokenizer: Path, out: Path, base: str, added: AddedTokens | None) -> Path:
    """The adapter in peft's format with the tokenizer and finetune.json beside it, written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        # no copy of a resized embedding: finetune.json lets load_adapter rebuild the base's rows exactly
        model.save_pretrained(tmp, save_embedding_layers=False)
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, tmp / name)
        record = {"base_model": base, "added_tokens": added.to_dict() if added is not None else None}
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the adapter to {out} ({e.strerror or e}); the last checkpoint "
                              "is intact: free disk space and rerun with --resume") from None  # fmt: skip
    return out


def load_adapter(base: str | Path, adapter: str | Path) -> nn.Module:
    """The base model with the adapter applied (a peft model, not merged), as the run trained it."""
    from tnlm.models.registry import create_model

    peft = _peft()

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise CheckpointError(f"{adapter} has no adapter_config.json: give the adapter folder a LoRA run wrote "
                              "(RUN/adapter)")  # fmt: skip
    model = create_model(base)
    added = _recorded_tokens(adapter)
    if added is not None:
        _refit(model, added, base=base)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return peft.PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"the adapter {adapter} does not fit the model {base}: {str(e).splitlines()[0]}; "
                              "give the base model the adapter was trained on") from None  # fmt: skip


def _recorded_tokens(adapter: Path) -> AddedTokens | None:
    file = adapter / RECORD
    if not file.is_file():
        return None  # an adapter from elsewhere: the base is used as it is
    recorded = json.loads(file.read_text()).get("added_tokens")
    return AddedTokens.from_dict(recorded) if recorded else None


def _refit(model: nn.Module, added: AddedTokens, *, base: str | Path) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != added.base_vocab_size:
        raise CheckpointError(f"the adapter was trained on a base with {added.base_vocab_size} embedding rows, "
                              f"but {base} has {rows}: give the base model the adapter was trained on")  # fmt: skip
    if added.vocab_size > rows:
        model.resize_token_embeddings(added.vocab_size, mean_resizing=False)
    init_new_rows(model, added)


def merge_lora(base: str | Path, adapter: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Base + adapter merged into a plain model directory (with the adapter's tokenizer) at `out`."""
    out, adapter = Path(out), Path(adapter)
    if out.resolve() in (Path(base).resolve(), adapter.resolve()):
        raise ConfigError(f"the merged model must go to a new folder, not {out}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty: choose a new folder, or pass --overwrite to replace it")
    merged = load_adapter(base, adapter).merge_and_unload()
    return export_model(merged, tokenizer=adapter, out=out)
