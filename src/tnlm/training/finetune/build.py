"""`finetune(config)`: supervised fine-tuning on dialogues, on the pretraining run loop.

What differs from pretraining is only what `build_finetune_trainer` and `export_finetuned` do: the
model comes from a directory (usually a `tnlm train` run's model/), the tokenizer gets the chat markers,
the data are dialogues with loss on the answers, and the method is full fine-tuning or LoRA. The loop,
the loss, checkpoints, exact resume, metrics and the Ctrl-C handling are `tnlm.training.run`'s.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from tnlm.errors import ConfigError
from tnlm.models.registry import PRESETS, create_model
from tnlm.training.build import DataInfo, pick_device, pick_precision
from tnlm.training.checkpoint import export_model
from tnlm.training.config import ChatDataSection, FinetuneConfig, ModelSection
from tnlm.training.finetune.dialogues import Dialogue, read_dialogues
from tnlm.training.finetune.loader import ChatLoader
from tnlm.training.finetune.lora import apply_lora, save_adapter
from tnlm.training.finetune.samples import Sample, build_samples
from tnlm.training.finetune.tokens import AddedTokens, add_markers, check_vocab, fit_embeddings, load_hf_tokenizer
from tnlm.training.optim import build_optimizer, build_schedule
from tnlm.training.parallelize import parallelize, supports_packed_documents
from tnlm.training.run import RunResult, train
from tnlm.training.trainer import Trainer, seed_everything


@dataclass(frozen=True)
class ChatDataInfo(DataInfo):
    """DataInfo of chat data: the samples' hash identifies them; `added` records the marker rows."""

    sha256: str = ""
    added: AddedTokens | None = None

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "sha256": self.sha256}


def finetune(config: FinetuneConfig, *, resume: bool = False) -> RunResult:
    """Fine-tune (or, with resume, continue fine-tuning) as `config` says; returns where the result went:
    RUN/model (full) or RUN/adapter (LoRA, in peft's format)."""
    export = functools.partial(export_finetuned, config=config)
    return train(config, resume=resume, build=build_finetune_trainer, export=export)


def build_finetune_trainer(config: FinetuneConfig) -> tuple[Trainer, ChatDataInfo]:
    """The model (markers fitted, LoRA applied for method=lora), its optimizer, and the chat loaders."""
    device = pick_device(config.train.device)
    precision = pick_precision(config.train.precision, device)
    seed_everything(config.seed)
    model = load_base(config.model, tokenizer=config.data.tokenizer, seed=config.seed)
    tokenizer_dir = Path(config.data.tokenizer or config.model.name)
    tokenizer = load_hf_tokenizer(tokenizer_dir, what="data.tokenizer" if config.data.tokenizer else "the model")
    check_vocab(tokenizer, model, tokenizer_dir=tokenizer_dir)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in add_markers(tokenizer)]
    added = fit_embeddings(model, vocab_size=len(tokenizer), new_ids=new_ids)
    run_tokenizer = Path(config.output) / "tokenizer"
    tokenizer.save_pretrained(str(run_tokenizer))
    packed = use_packing(config.data.packing, model)
    (train_samples, val_samples), info = chat_data(config.data, tokenizer, seed=config.seed, folder=run_tokenizer,
                                                   added=added)  # fmt: skip
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else info.eos_id
    common = dict(seq_len=config.data.seq_len, batch_size=config.data.batch_size, packed=packed, pad_id=pad_id,
                  seed=config.seed)  # fmt: skip
    train_loader = ChatLoader(train_samples, shuffle=config.data.shuffle, **common)
    val_loader = ChatLoader(val_samples, shuffle=False, **common)
    if config.method == "lora":
        model = apply_lora(model, config.lora, added=added)
    parallelize(base_of(model), None, config)
    model = model.to(device)
    optimizer = build_optimizer(model, config.optimizer, device=device)
    schedule = build_schedule(optimizer, config.schedule, total_steps=config.train.steps)
    trainer = Trainer(model=model, optimizer=optimizer, schedule=schedule, train_loader=train_loader,
                      val_loader=val_loader, device=device, precision=precision, grad_accum=config.train.grad_accum,
                      grad_clip=config.train.grad_clip)  # fmt: skip
    return trainer, info


def load_base(cfg: ModelSection, *, tokenizer: str | None, seed: int) -> nn.Module:
    """The model to fine-tune, float32, in training mode."""
    if cfg.name in PRESETS and tokenizer is None:
        raise ConfigError(f"model.name={cfg.name} is a preset (random weights, no tokenizer): fine-tune a model "
                          "directory (the model/ of a `tnlm train` run), or set data.tokenizer")  # fmt: skip
    return create_model(cfg.name, overrides=dict(cfg.overrides) or None, seed=seed).train()


def base_of(model: nn.Module) -> nn.Module:
    """The tnlm model inside a peft wrapper (LoRA layers are injected into it in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def use_packing(setting: str, model: nn.Module) -> bool:
    supported = supports_packed_documents(model)
    if setting == "true" and not supported:
        raise ConfigError(f"data.packing=true packs dialogues with cu_seqlens, which {model.config.model_type} "
                          "does not take; set data.packing=false (one padded row per sample) or auto")  # fmt: skip
    return supported if setting == "auto" else setting == "true"


def chat_data(cfg: ChatDataSection, tokenizer, *, seed: int, folder: Path,
              added: AddedTokens) -> tuple[tuple[list[Sample], list[Sample]], ChatDataInfo]:  # fmt: skip
    """(train samples, validation samples) and what identifies them."""
    from tnlm.generation.tokenizer import HFTokenizer

    train_dialogues, val_dialogues, note = split_dialogues(cfg, seed=seed)
    chat_tokenizer = HFTokenizer(tokenizer)
    train, stats = build_samples(train_dialogues, chat_tokenizer, seq_len=cfg.seq_len, mode=cfg.samples)
    val, val_stats = build_samples(val_dialogues, chat_tokenizer, seq_len=cfg.seq_len, mode=cfg.samples)
    tqdm.write(f"chat data: train {stats.describe()}; validation {val_stats.describe()}{note}")
    if not train or not val:
        raise ConfigError(f"no {'training' if not train else 'validation'} sample has an answer token to learn "
                          f"from (data.seq_len={cfg.seq_len}); check the data, or raise data.seq_len")  # fmt: skip
    digest = hashlib.sha256()
    for sample in (*train, None, *val):
        digest.update(b"|" if sample is None else sample.input_ids.tobytes() + sample.labels.tobytes())
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    info = ChatDataInfo(path=Path(cfg.path), vocab_size=len(tokenizer), eos_id=eos, train_tokens=stats.tokens,
                        val_tokens=val_stats.tokens, tokenizer=folder, sha256=digest.hexdigest(),
                        added=added)  # fmt: skip
    return (train, val), info


def split_dialogues(cfg: ChatDataSection, *, seed: int) -> tuple[list[Dialogue], list[Dialogue], str]:
    """(train, validation, a note for the user): data.val_path, or a seeded share held out of data.path."""
    dialogues = read_dialogues(cfg.path, column=cfg.column, split=cfg.split)
    if cfg.val_path is not None:
        val = read_dialogues(cfg.val_path, column=cfg.column, split=cfg.val_split or cfg.split)
        return dialogues, val, ""
    n_val = int(round(len(dialogues) * cfg.val_fraction))
    if cfg.val_fraction > 0:
        n_val = min(max(n_val, 1), len(dialogues) - 1)
    if n_val <= 0:
        return dialogues, dialogues, " (no held-out dialogues: the validation loss is measured on the training set)"
    held = set(np.random.default_rng(seed).permutation(len(dialogues))[:n_val].tolist())
    train = [d for i, d in enumerate(dialogues) if i not in held]
    val = [d for i, d in enumerate(dialogues) if i in held]
    return train, val, f" ({n_val} dialogues held out)"


def export_finetuned(model: nn.Module, *, data: ChatDataInfo, run_dir: Path,
                     config: FinetuneConfig) -> tuple[Path, str]:  # fmt: skip
    """Full fine-tuning: RUN/model, a plain model directory. LoRA: RUN/adapter, in peft's format."""
    if config.method == "full":
        out = export_model(model, tokenizer=data.tokenizer, out=run_dir / "model")
        return out, f"try: tnlm chat {out}"
    out = save_adapter(model, tokenizer=data.tokenizer, out=run_dir / "adapter", base=config.model.name,
                       added=data.added)  # fmt: skip
    return out, f"a LoRA adapter; make a model of it: tnlm merge-lora {config.model.name} {out} {run_dir / 'merged'}"
