"""`compare(config)`: train every model with `tnlm.training.train`, evaluate them, measure their speed,
write one report. Every phase keeps its result in the output folder, so a rerun after an interruption
continues where it stopped (an interrupted training resumes from its checkpoint).

    output/compare.json             the configuration and the plan (steps per model, how they were chosen)
    output/runs/NAME/               each model's training run (config.yaml, metrics.jsonl, model/, ...)
    output/results/NAME.train.json  ...eval.json, speed.json, samples.json: each phase's numbers
    output/report.md, report.json, loss_vs_tokens.png, loss_vs_time.png, train_speed.png, decode_speed.png
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tnlm.compare.config import CompareConfig, ModelEntry
from tnlm.errors import ConfigError
from tnlm.training.config import TrainConfig

Log = Callable[[str], None]
STATE = "compare.json"
CALIBRATION_STEPS = 2  # timed steps per model (after one warm-up) to size a budget given in seconds
TRAINING_SHARE = 0.9  # of a budget in seconds: the rest goes to validation passes and checkpoints
MIN_STEPS = 2


@dataclass
class Plan:
    """How long every model trains, and why."""

    steps: int
    tokens_per_step: int
    basis: str  # how the steps were chosen, in words
    calibration: dict[str, float] = field(default_factory=dict)  # tokens/s per model at the training shape
    settings: list[str] = field(default_factory=list)  # training overrides the plan adds (steps, warmup, eval)

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


def _log_default(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text)


def compare(config: CompareConfig, *, log: Log = _log_default) -> dict[str, Any]:
    """Run (or continue) the comparison; returns the report (also written as report.json)."""
    from tnlm.compare import phases
    from tnlm.compare.report import write_report

    out = Path(config.output)
    plan = prepare(config, log=log)
    configs = {e.name: train_config(config, e, plan) for e in config.models}
    for i, entry in enumerate(config.models, 1):
        log(f"[{i}/{len(config.models)}] {entry.name}: training {plan.steps} steps ({plan.tokens:,} tokens)")
        phases.train_model(entry, configs[entry.name], results=out / "results", log=log)
    for entry in config.models:
        phases.evaluate_model(entry, configs[entry.name], config.eval, results=out / "results", log=log)
    phases.measure_speed(configs, config.speed, results=out / "results", log=log)
    phases.sample_models(configs, config.samples, results=out / "results", log=log)
    report = write_report(config, plan, configs, out)
    log(f"report: {out / 'report.md'}")
    return report


def train_config(config: CompareConfig, entry: ModelEntry, plan: Plan) -> TrainConfig:
    return config.train_config(entry, extra=plan.settings)


def prepare(config: CompareConfig, *, log: Log) -> Plan:
    """The plan of this output folder: made now (and saved), or read back from an earlier run of the same
    comparison. A folder holding anything else is refused, nothing in it touched."""
    out = Path(config.output)
    state = out / STATE
    fingerprint = _fingerprint(config)
    if state.is_file():
        saved = json.loads(state.read_text(encoding="utf-8"))
        old = _without_log(saved["fingerprint"])
        if old != fingerprint:
            changed = [k for k in fingerprint if old.get(k) != fingerprint[k]]
            raise ConfigError(f"{out} holds another comparison (its {', '.join(changed)} differ): rerun with its "
                              "own configuration to continue it, or set output=NEW_DIR")  # fmt: skip
        return Plan(**saved["plan"])
    from tnlm.data.files import write_json_atomic
    from tnlm.fsutil import remove_unfinished

    remove_unfinished(state)  # a comparison killed while writing its first state leaves only that
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no comparison: give an empty or new folder (output=NEW_DIR)")
    plan = make_plan(config, log=log)

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, {"fingerprint": fingerprint, "plan": asdict(plan)})
    log(f"plan: {plan.steps} steps of {plan.tokens_per_step:,} tokens per model ({plan.basis})")
    return plan


def _fingerprint(config: CompareConfig) -> dict[str, Any]:
    """What makes two comparisons the same: what is trained (not how it is measured afterwards, nor how
    its runs report: their `log` settings may change, as on a resumed training run)."""
    d = config.to_dict()
    return _without_log(json.loads(json.dumps({k: d[k] for k in ("training", "models", "budget")})))


def _without_log(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint less the runs' log settings (folders saved before they were left out hold them)."""
    training = {k: v for k, v in fingerprint.get("training", {}).items() if k != "log"}
    return {**fingerprint, "training": training}


def make_plan(config: CompareConfig, *, log: Log) -> Plan:
    first = config.train_config(config.models[0])
    per_step = first.tokens_per_step()
    budget = config.budget
    if budget.tokens is not None:
        steps = max(MIN_STEPS, math.ceil(budget.tokens / per_step))
        plan = Plan(steps=steps, tokens_per_step=per_step, basis=f"budget.tokens = {budget.tokens:,}")
    elif budget.seconds is not None:
        rates = {e.name: calibrate(config.train_config(e), log=log) for e in config.models}
        seconds = budget.seconds * TRAINING_SHARE
        tokens = seconds / sum(1 / r for r in rates.values())
        steps = max(MIN_STEPS, int(tokens // per_step))
        basis = (f"budget.seconds = {budget.seconds:g}: the most tokens per model that fit the measured speeds "
                 f"({', '.join(f'{n} {r:,.0f}' for n, r in rates.items())} tokens/s)")  # fmt: skip
        plan = Plan(steps=steps, tokens_per_step=per_step, basis=basis, calibration=rates)
    else:
        plan = Plan(steps=first.train.steps, tokens_per_step=per_step, basis="training.train.steps")
    plan.settings = [f"train.steps={plan.steps}", *_scaled_settings(budget, plan.steps)]
    return plan


def _scaled_settings(budget: Any, steps: int) -> list[str]:
    """Warm-up and validation spacing as fractions of a number of steps known only now."""
    out = []
    if budget.warmup_fraction is not None:
        out.append(f"schedule.warmup_steps={max(1, round(budget.warmup_fraction * steps))}")
    if budget.validations is not None:
        out.append(f"eval.every={max(1, steps // budget.validations)}")
        out.append(f"checkpoint.every={max(1, steps // budget.validations)}")
    return out


def calibrate(config: TrainConfig, *, log: Log) -> float:
    """Training tokens/s of one model at its run's own shape, on its real data (fastest of a few steps)."""
    from tnlm.training.run import build_trainer
    from tnlm.training.throughput import time_train_step

    trainer, _ = build_trainer(config)
    time_train_step(trainer)  # warm-up
    best = min(time_train_step(trainer) for _ in range(CALIBRATION_STEPS))
    rate = config.tokens_per_step() / best
    log(f"calibration: {config.model.name} trains {rate:,.0f} tokens/s")
    return rate


def elapsed(start: float) -> float:
    return round(time.perf_counter() - start, 3)
