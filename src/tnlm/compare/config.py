"""The comparison configuration: the training every model shares, the models, and what is measured.

    output: runs/compare/tiny
    training:                 # the keys of a training YAML (configs/train/*.yaml), shared by every model
      data: {path: data/packed, seq_len: 256, batch_size: 8}
      optimizer: {lr: 3.0e-3}
      train: {steps: 400}
    budget: {tokens: 800000}  # or {seconds: 300}: the token budget that fits 300 s of training in all
    models:
      - name: tnl
        model: tnl-tiny
      - name: tnl-no-lrpe
        model: tnl-tiny
        overrides: {linear_use_lrpe_list: []}   # model config fields
      - name: transformer
        model: transformer-tiny
        settings: {optimizer.lr: 1.0e-3}         # this model's own training settings

Every model trains on the same data with the same seed and the same number of tokens: `settings`
may change the optimizer, the schedule or the precision, but not the data, the seed, the number of
steps or the tokens per step. Command-line overrides (`key=value`, dotted) apply to this file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tnlm.errors import ConfigError
from tnlm.fsutil import expand_home
from tnlm.training.config import TrainConfig, flatten, load_train_config

TOP_KEYS = ("output", "training", "budget", "models", "eval", "speed", "samples")
# what every model must share: a model's `settings` may not touch these
SHARED = ("data.", "seed", "train.steps", "train.grad_accum", "output", "model.")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelEntry:
    name: str  # the label in the report and the folder of its run
    model: str  # a preset name or a model directory
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields
    settings: dict[str, Any] = field(default_factory=dict)  # dotted training settings of this model only


@dataclass(frozen=True)
class Budget:
    tokens: int | None = None  # training tokens per model
    seconds: float | None = None  # or: the most tokens per model that fit this many seconds of training for all
    warmup_fraction: float | None = None  # warm-up steps as a share of the steps (default: training's own)
    validations: int | None = None  # validation passes (and checkpoints) per run (default: training's eval.every)


@dataclass(frozen=True)
class EvalSettings:
    tasks: tuple[str, ...] = ()  # multiple-choice tasks (tnlm eval's names), run when data_dir is given
    data_dir: str | None = None
    limit: float | None = None  # the first N items of each task (below 1: a fraction)
    num_fewshot: int = 0


@dataclass(frozen=True)
class SpeedSettings:
    train_lengths: tuple[int, ...] = (256, 1024, 4096)  # training tokens/s at these sequence lengths
    train_tokens: int = 4096  # tokens per timed step at every length (batch = train_tokens / length)
    train_repeats: int = 2  # timed steps per (model, length) after one warm-up step; the fastest counts
    decode_contexts: tuple[int, ...] = (256, 1024, 4096)  # decoding ms/token after this many tokens
    decode_tokens: int = 16  # timed steps per round
    decode_rounds: int = 3  # rounds per (model, context); the best round's mean counts


@dataclass(frozen=True)
class SampleSettings:
    prompts: tuple[str, ...] = ()  # each model continues each prompt
    max_new_tokens: int = 48
    temperature: float = 0.8  # 0: greedy
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int = 0


@dataclass(frozen=True)
class CompareConfig:
    output: str
    training: dict[str, Any]
    models: tuple[ModelEntry, ...]
    budget: Budget = Budget()
    eval: EvalSettings = EvalSettings()
    speed: SpeedSettings = SpeedSettings()
    samples: SampleSettings = SampleSettings()

    def train_config(self, entry: ModelEntry, *, extra: list[str] | tuple[str, ...] = ()) -> TrainConfig:
        """The training configuration of one model: the shared training, the model, its own settings, then
        `extra` (what the plan sets for every model: steps, warm-up, validation spacing)."""
        items = [f"{k}={json.dumps(v)}" for k, v in flatten(self.training).items()]
        items += [f"model.name={json.dumps(entry.model)}", f"model.overrides={json.dumps(entry.overrides)}"]
        items += [f"{k}={json.dumps(v)}" for k, v in flatten(entry.settings).items()]
        items.append(f"output={json.dumps(str(Path(self.output) / 'runs' / entry.name))}")
        return load_train_config(None, [*items, *extra])

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def load_compare_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                        raw: dict[str, Any] | None = None) -> CompareConfig:  # fmt: skip
    """A comparison from a YAML file (or the mapping `raw`) with dotted `key=value` overrides, checked."""
    data = dict(raw) if raw is not None else _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. training.train.steps=200")
        _set_dotted(data, key, yaml.safe_load(text) if text else "")
    config = _build(expand_home(data))
    from tnlm.models.registry import load_config

    for entry in config.models:  # every model and its training are checked before any trains
        load_config(entry.model, overrides=entry.overrides)
        config.train_config(entry)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"comparison config {path} does not exist (examples: configs/compare/*.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with output:, training: and models:")
    return data


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
    node[last] = value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return value


def _section(cls: type, value: Any, where: str) -> Any:
    """Dataclass `cls` from a mapping: unknown keys are errors; lists become tuples."""
    data = _mapping(value, where)
    known = cls.__dataclass_fields__
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; {where} knows: {', '.join(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _build(data: dict[str, Any]) -> CompareConfig:
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the comparison config; it knows: {', '.join(TOP_KEYS)}")
    for key in ("model", "output"):
        if key in _mapping(data.get("training"), "training"):
            raise ConfigError(f"training.{key}: the comparison sets it (each model under models:, the folder as "
                              "output:); drop it from training:")
    if not data.get("output"):
        raise ConfigError("output: is not set: give the folder for the runs and the report, e.g. output=runs/compare")
    models = tuple(_entry(m, i) for i, m in enumerate(_models(data.get("models"))))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must differ: {', '.join(n for n in names if names.count(n) > 1)} repeats")
    config = CompareConfig(
        output=str(data["output"]), training=_mapping(data.get("training"), "training"), models=models,
        budget=_section(Budget, data.get("budget"), "budget"), eval=_section(EvalSettings, data.get("eval"), "eval"),
        speed=_section(SpeedSettings, data.get("speed"), "speed"),
        samples=_section(SampleSettings, data.get("samples"), "samples"),
    )  # fmt: skip
    _check(config)
    return config


def _models(value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError("models: must list the models to compare, e.g. [{name: tnl, model: tnl-tiny}, ...]")
    return value


def _entry(value: Any, index: int) -> ModelEntry:
    where = f"models[{index}]"
    entry = _section(ModelEntry, value, where)
    if not isinstance(entry.name, str) or not NAME.match(entry.name):
        raise ConfigError(f"{where}.name must be a short name of letters, digits, '.', '_' or '-', got {entry.name!r}")
    if not isinstance(entry.model, str) or not entry.model:
        raise ConfigError(f"{where}.model must be a preset name or a model directory")
    _mapping(entry.overrides, f"{where}.overrides")
    for key in flatten(_mapping(entry.settings, f"{where}.settings")):
        if key.startswith(SHARED) or key in ("seed", "output"):
            raise ConfigError(
                f"{where}.settings.{key}: every model trains on the same data, seed and number of tokens; "
                "set it under training: for all models (a model's own settings may change the optimizer, the "
                "schedule or the precision)"
            )
    return entry


def _check(config: CompareConfig) -> None:
    b, s, e = config.budget, config.speed, config.eval
    if b.tokens is not None and b.seconds is not None:
        raise ConfigError("budget: give tokens or seconds, not both")
    if b.tokens is not None and (not isinstance(b.tokens, int) or b.tokens < 1):
        raise ConfigError(f"budget.tokens must be a positive whole number, got {b.tokens!r}")
    if b.warmup_fraction is not None and not (isinstance(b.warmup_fraction, (int, float)) and 0 <= b.warmup_fraction < 1):
        raise ConfigError(f"budget.warmup_fraction must be in [0, 1), got {b.warmup_fraction!r}")
    if b.validations is not None and (not isinstance(b.validations, int) or b.validations < 1):
        raise ConfigError(f"budget.validations must be a whole number >= 1, got {b.validations!r}")
    if b.seconds is not None and not (isinstance(b.seconds, (int, float)) and math.isfinite(b.seconds) and b.seconds > 0):
        raise ConfigError(f"budget.seconds must be a positive number, got {b.seconds!r}")
    for key in ("train_lengths", "decode_contexts"):
        values = getattr(s, key)
        if not all(isinstance(v, int) and v >= 1 for v in values):
            raise ConfigError(f"speed.{key} must be a list of positive whole numbers (or []), got {list(values)}")
    for key in ("train_tokens", "train_repeats", "decode_tokens", "decode_rounds"):
        if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
            raise ConfigError(f"speed.{key} must be a whole number >= 1, got {getattr(s, key)!r}")
    if e.tasks and e.data_dir is None:
        raise ConfigError("eval.tasks needs eval.data_dir: the folder with each task's original files (see tnlm eval -h)")
    if config.samples.max_new_tokens < 1:
        raise ConfigError(f"samples.max_new_tokens must be >= 1, got {config.samples.max_new_tokens}")
