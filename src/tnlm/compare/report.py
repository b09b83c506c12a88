"""The comparison's report: report.json (every number), report.md (the tables), and four PNG plots.

Every number in the Markdown comes from report.json, formatted by the functions here; the verdict
line names the model with the lowest validation loss, whichever family it is.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from pathlib import Path
from typing import Any

from tnlm.compare.config import CompareConfig
from tnlm.compare.run import Plan
from tnlm.data.files import write_json_atomic, write_text_atomic
from tnlm.training.config import TrainConfig
from tnlm.training.logs import read_metrics

PLOTS = ("loss_vs_tokens.png", "loss_vs_time.png", "train_speed.png", "decode_speed.png")


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def curve(metrics: Path) -> dict[str, list]:
    """Training loss against steps, tokens and training seconds (the sum of step times: pauses for
    validation, checkpoints or an interruption do not count), and the validation points."""
    rows = read_metrics(metrics)
    out: dict[str, list] = {"step": [], "tokens": [], "seconds": [], "loss": [], "val": []}
    seconds, tokens, at = 0.0, 0, {0: (0, 0.0)}
    for r in rows:
        if "loss" in r:
            seconds += (r["tokens"] - tokens) / r["tokens_per_s"]
            tokens = r["tokens"]
            at[r["step"]] = (tokens, seconds)
            for key, value in (("step", r["step"]), ("tokens", tokens), ("seconds", seconds), ("loss", r["loss"])):
                out[key].append(value)
    for r in rows:
        if "val_loss" in r and r["step"] in at:
            out["val"].append({"step": r["step"], "tokens": at[r["step"]][0], "seconds": at[r["step"]][1],
                               "val_loss": r["val_loss"]})  # fmt: skip
    return out


def model_record(name: str, entry: Any, config: TrainConfig, results: Path, speed: dict, samples: dict) -> dict:
    from tnlm.models.registry import meta_model

    train = _read(results / f"{name}.train.json")
    model_dir = Path(config.output) / "model"
    meta = meta_model(model_dir)
    rates = [r["tokens_per_s"] for r in read_metrics(Path(config.output) / "metrics.jsonl") if "tokens_per_s" in r]
    return {
        "name": name, "model": entry.model, "family": meta.config.model_type,
        "parameters": sum(p.numel() for p in meta.parameters()), "overrides": entry.overrides,
        "settings": entry.settings, "lr": config.optimizer.lr, "warmup_steps": config.schedule.warmup_steps,
        "run_dir": config.output, "model_dir": str(model_dir),
        "train": {**train, "tokens_per_s_median": _median(rates)},
        "curve": curve(Path(config.output) / "metrics.jsonl"),
        "eval": _read(results / f"{name}.eval.json"),
        "speed": {"train": speed.get("train", {}).get(name, []), "decode": speed.get("decode", {}).get(name, [])},
        "samples": samples.get("samples", {}).get(name, []),
    }  # fmt: skip


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def build_report(config: CompareConfig, plan: Plan, configs: dict[str, TrainConfig], out: Path) -> dict:
    import torch

    import tnlm

    results = out / "results"
    speed, samples = _read(results / "speed.json"), _read(results / "samples.json")
    entries = {e.name: e for e in config.models}
    models = [model_record(n, entries[n], c, results, speed, samples) for n, c in configs.items()]
    first = next(iter(configs.values()))
    return {
        "tnlm_version": tnlm.__version__, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "device": first.train.device},
        "data": {"path": first.data.path, "seq_len": first.data.seq_len, "batch_size": first.data.batch_size,
                 "mode": first.data.mode, "seed": first.seed},
        "plan": {"steps": plan.steps, "tokens_per_step": plan.tokens_per_step, "tokens": plan.tokens,
                 "basis": plan.basis, "calibration": plan.calibration},
        "speed_settings": speed.get("settings"), "models": models, "verdict": verdict(models),
    }  # fmt: skip


def verdict(models: list[dict]) -> dict:
    scored = [m for m in models if m["eval"].get("val_loss") is not None]
    if not scored:
        return {}
    best = min(scored, key=lambda m: m["eval"]["val_loss"])
    others = [m for m in scored if m is not best]
    text = f"lowest validation loss: {best['name']} ({best['eval']['val_loss']:.4f})"
    if others:
        text += "; then " + ", ".join(f"{m['name']} ({m['eval']['val_loss']:.4f}, "
                                      f"{m['eval']['val_loss'] - best['eval']['val_loss']:+.4f})" for m in
                                      sorted(others, key=lambda m: m["eval"]["val_loss"]))  # fmt: skip
    return {"best_val_loss": best["name"], "family": best["family"], "text": text}


def write_report(config: CompareConfig, plan: Plan, configs: dict[str, TrainConfig], out: Path) -> dict:
    from tnlm.compare.markdown import render
    from tnlm.compare.plots import plot_all

    report = build_report(config, plan, configs, out)
    report["plots"] = plot_all(report, out)
    write_json_atomic(out / "report.json", _finite(report))
    write_text_atomic(out / "report.md", render(report))
    return report


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
