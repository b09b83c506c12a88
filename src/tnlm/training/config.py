"""The training configuration: one small dataclass per section, read from YAML, then dotted overrides.

    cfg = load_train_config("configs/train/tnl-tiny.yaml", ["optimizer.lr=1e-3", "train.steps=50"])

Values given on the command line are parsed as YAML (`[0.9, 0.95]`, `true`, `null`) and converted to the
field's type, so `1e-3` is a float even though YAML 1.1 reads it as a string. An unknown key is an error
that names it and lists the keys its section knows. `model.overrides` is a free mapping of model config
fields; the trainer checks those against the model family once it knows it.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tnlm.errors import ConfigError
from tnlm.fsutil import expand_home


@dataclass
class ModelSection:
    name: str = "tnl-tiny"  # a preset name or a model directory (to continue training it)
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. {decoder_layers: 2}


@dataclass
class DataSection:
    path: str | None = None  # token shards written by `tnlm data pack` (required)
    tokenizer: str | None = None  # default: the tokenizer recorded in the shards' meta.json
    seq_len: int = 256
    batch_size: int = 8  # sequences per micro-batch, all data-parallel processes together; varlen: one row of batch_size * seq_len tokens
    mode: str = "windows"  # windows (fixed windows across documents) | varlen (whole documents, cu_seqlens)
    shuffle: bool = True


@dataclass
class OptimizerSection:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    fused: str = "auto"  # auto (where the device supports it) | true | false


@dataclass
class ScheduleSection:
    warmup_steps: int = 100
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1  # the floor, as a fraction of optimizer.lr


@dataclass
class TrainSection:
    steps: int = 1000
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    precision: str = "auto"  # auto (float32 on CPUs, bf16 autocast on GPUs) | float32 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    activation_checkpointing: bool = False  # recompute each block in the backward pass
    compile: bool = False  # torch.compile each block


@dataclass
class EvalSection:
    every: int = 100  # steps between validation passes; 0 = only at the end
    batches: int = 20  # validation batches per pass (the same ones each time)


@dataclass
class LogSection:
    progress: bool = True  # the progress bar
    tensorboard: str = "auto"  # auto (when installed) | true | false
    plot: bool = True  # loss-curve PNG at each validation and at the end


@dataclass
class CheckpointSection:
    every: int = 200  # steps between checkpoints (also written on SIGTERM/SIGINT and at the end)
    keep: int = 3  # the newest k checkpoints are kept


@dataclass
class ParallelSection:
    """How the processes of `torchrun --nproc_per_node N -m tnlm train ...` share the work; the product
    dp_shard * sp * tp is the number of processes. -1: what the other two leave (default: all of them)."""

    dp_shard: int = -1  # data parallel, parameters sharded (FSDP2); data.batch_size is split over these
    tp: int = 1  # tensor parallel: each process holds a slice of the heads and of the feed-forward width
    sp: int = 1  # sequence parallel (linear attention only): each process runs a slice of every sequence


@dataclass
class TrainConfig:
    command: ClassVar[str] = "tnlm train"  # the command that runs this kind of config (for messages)
    examples: ClassVar[str] = "configs/train/*.yaml"  # example configs of this kind (for messages)
    output: str = "runs/run"  # the run directory
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def tokens_per_step(self) -> int:
        return self.data.seq_len * self.data.batch_size * self.train.grad_accum


# keys that may change between a run and its resumption: they do not change what is trained
RESUMABLE_CHANGES = ("data.path", "data.tokenizer", "train.device", "eval.", "log.", "checkpoint.", "parallel.")
CHOICES = {
    "data.mode": ("windows", "varlen"),
    "optimizer.fused": ("auto", "true", "false"),
    "schedule.decay": ("cosine", "linear", "constant"),
    "train.precision": ("auto", "float32", "bf16"),
    "log.tensorboard": ("auto", "true", "false"),
}


def load_train_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A config from a YAML file (or the defaults when path is None) with `key=value` overrides applied."""
    cfg = read_config(TrainConfig, path, overrides)
    validate(cfg)
    return cfg


def read_config(cls: type, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Dataclass `cls` (TrainConfig or a subclass) from a YAML file and overrides, before range checks."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path), examples=cls.examples)
    for item in overrides:
        key, value = _split_override(item)
        _set_dotted(raw, key, value)
    return _build(cls, expand_home(raw), prefix="")


def _read_yaml(path: Path, *, examples: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (examples: {examples})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, ...), not {type(raw).__name__}")
    return raw


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or key != key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optimizer.lr=3e-4")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, *, prefix: str) -> Any:
    """Dataclass `cls` from a mapping; nested sections recurse; unknown keys are errors."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint}; {where} knows: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        if is_dataclass(hints[name]):
            values[name] = _build(hints[name], raw[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = _coerce(raw[name], hints[name], key=f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, *, key: str) -> Any:
    """value converted to the field type `hint` (int, float, bool, str, X | None, list, dict)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    if origin is bool and isinstance(value, bool):
        return value
    if origin is str and isinstance(value, (str, int, float, bool)) and value is not None:
        return str(value).lower() if isinstance(value, bool) else str(value)
    if origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if origin is list and isinstance(value, (list, tuple)):
        return [_coerce(v, typing.get_args(hint)[0], key=key) for v in value]
    if origin is dict and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list", dict: "a mapping"}.get(origin, str(hint))  # fmt: skip


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; model.overrides stays one value."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "model.overrides":
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def validate(cfg: TrainConfig) -> None:
    """Range and choice checks, each naming the key to fix."""
    validate_common(cfg, choices=CHOICES)
    if cfg.data.path is None:
        raise ConfigError(
            "data.path is not set: give the token shards of `tnlm data pack` on the command line, "
            "e.g. `tnlm train CONFIG data.path=data/packed`"
        )


def validate_common(cfg: TrainConfig, *, choices: dict[str, tuple[str, ...]]) -> None:
    """The checks of every section but the data's own fields (besides seq_len and batch_size)."""
    flat = flatten(cfg.to_dict())
    for key, allowed in choices.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key} is {flat[key]!r}; choose one of {', '.join(allowed)}")
    for key in ("data.seq_len", "data.batch_size", "train.steps", "train.grad_accum", "eval.batches",
                "checkpoint.every", "checkpoint.keep"):  # fmt: skip
        if flat[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {flat[key]}")
    for key in ("schedule.warmup_steps", "eval.every", "train.grad_clip", "optimizer.weight_decay", "optimizer.eps"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    if not cfg.optimizer.lr > 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    if not 0 <= cfg.schedule.min_lr_ratio <= 1:
        raise ConfigError(f"schedule.min_lr_ratio must be in [0, 1], got {cfg.schedule.min_lr_ratio}")
    if len(cfg.optimizer.betas) != 2 or not all(0 <= b < 1 for b in cfg.optimizer.betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {cfg.optimizer.betas}")
    _validate_parallel(cfg)


def _validate_parallel(cfg: TrainConfig) -> None:
    sizes = {k: getattr(cfg.parallel, k) for k in ("dp_shard", "tp", "sp")}
    for key, n in sizes.items():
        if n == 0 or n < -1 or (n == -1 and key != "dp_shard"):
            allowed = "at least 1, or -1 (the processes the others leave)" if key == "dp_shard" else "at least 1"
            raise ConfigError(f"parallel.{key} must be {allowed}, got {n}")
    if sizes["dp_shard"] > 0 and cfg.data.batch_size % sizes["dp_shard"]:
        raise ConfigError(f"data.batch_size ({cfg.data.batch_size}) is the batch of all data-parallel processes "
                          f"together, so it must be divisible by parallel.dp_shard ({sizes['dp_shard']})")


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Lines 'key: saved -> current' for settings that must not change when a run is resumed."""
    a, b = flatten(saved), flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(RESUMABLE_CHANGES) or a.get(key, MISSING) == b.get(key, MISSING):
            continue
        out.append(f"{key}: {a.get(key, '(absent)')!r} in the run, {b.get(key, '(absent)')!r} now")
    return out


# ---- fine-tuning (`tnlm finetune`): the same sections, with chat data and the method instead ----


@dataclass
class ChatDataSection:
    # JSON Lines of {"messages": [...]} (a file, a folder or a glob; .gz/.zst too), a folder written by
    # datasets' save_to_disk, hf:NAME or hf:NAME:CONFIG (a Hugging Face dataset), or builtin:pydoc-chat
    path: str | None = None
    split: str = "train"  # the split of a Hugging Face dataset
    column: str = "messages"  # the column (JSON key) holding each dialogue's messages
    val_path: str | None = None  # validation dialogues (same forms as path); default: held out of path
    val_split: str | None = None  # for a Hugging Face dataset given as val_path; default: split
    val_fraction: float = 0.05  # share of dialogues held out when val_path is not set (0: validate on train)
    tokenizer: str | None = None  # default: the model directory's own
    seq_len: int = 512  # tokens per sample; longer dialogues are split at turn boundaries
    batch_size: int = 8  # samples per micro-batch; packed: one row of up to batch_size * seq_len tokens
    samples: str = "dialogue"  # dialogue (one sample, loss on every answer) | turn (one per answer)
    packing: str = "auto"  # auto (packed where the family takes cu_seqlens) | true | false (padded rows)
    shuffle: bool = True


@dataclass
class LoraSection:
    rank: int = 8
    alpha: float = 16.0  # adapters are scaled by alpha / rank
    dropout: float = 0.05
    target_modules: list[str] | None = None  # linear layers by name; default: the family's (tnlm.training.lora)


@dataclass
class FinetuneConfig(TrainConfig):
    command: ClassVar[str] = "tnlm finetune"
    examples: ClassVar[str] = "configs/finetune/*.yaml"
    output: str = "runs/finetune"
    method: str = "lora"  # lora (adapters through peft; the base stays frozen) | full (every weight trains)
    data: ChatDataSection = field(default_factory=ChatDataSection)
    lora: LoraSection = field(default_factory=LoraSection)


FINETUNE_CHOICES = {
    **{k: v for k, v in CHOICES.items() if not k.startswith("data.")},
    "method": ("lora", "full"),
    "data.samples": ("dialogue", "turn"),
    "data.packing": ("auto", "true", "false"),
}


def load_finetune_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> FinetuneConfig:
    """The fine-tuning config of a YAML file with `key=value` overrides, checked."""
    cfg = read_config(FinetuneConfig, path, overrides)
    validate_finetune(cfg)
    return cfg


def validate_finetune(cfg: FinetuneConfig) -> None:
    validate_common(cfg, choices=FINETUNE_CHOICES)
    if cfg.data.path is None:
        raise ConfigError("data.path is not set: give the chat data on the command line, e.g. "
                          "`tnlm finetune CONFIG data.path=chats.jsonl` (or data.path=builtin:pydoc-chat)")  # fmt: skip
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.data.seq_len < 8:
        raise ConfigError(f"data.seq_len must be at least 8 tokens, got {cfg.data.seq_len}")
    lora = cfg.lora
    if lora.rank < 1 or not lora.alpha > 0 or not 0 <= lora.dropout < 1:
        raise ConfigError(f"lora needs rank >= 1, alpha > 0 and 0 <= dropout < 1; got rank={lora.rank}, "
                          f"alpha={lora.alpha}, dropout={lora.dropout}")  # fmt: skip
    if lora.target_modules is not None and not lora.target_modules:
        raise ConfigError("lora.target_modules is empty: name some linear layers, or drop the key for the "
                          "family's default")  # fmt: skip
