"""What a run reports: a progress bar, metrics.jsonl (one line per step and per validation), TensorBoard
when installed, and a loss-curve PNG at each validation and at the end.

metrics.jsonl lines: {"step", "loss", "grad_norm", "lr", "tokens", "tokens_per_s", "mfu", "time"} for
training steps and {"step", "val_loss", "val_ppl"} for validation passes. A resumed run first drops the
lines of steps after its checkpoint, so the file always tells one consistent history.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tnlm.data.files import atomic_path
from tnlm.errors import ConfigError


class RunLog:
    def __init__(self, folder: Path, *, total_steps: int, start_step: int, progress: bool, tensorboard: str,
                 plot: bool) -> None:  # fmt: skip
        self.folder = folder
        self.metrics_file = folder / "metrics.jsonl"
        self.plot_enabled = plot
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress,
                        dynamic_ncols=True)  # fmt: skip
        self.tb = _tensorboard_writer(folder / "tensorboard", tensorboard)

    def note(self, text: str) -> None:
        """A line for the user, printed above the progress bar."""
        tqdm.write(text)

    def truncate_after(self, step: int) -> None:
        """Keep only the lines of steps up to `step` (a resumed run continues from there)."""
        rows = [r for r in read_metrics(self.metrics_file) if r["step"] <= step]
        with atomic_path(self.metrics_file) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def reset(self) -> None:
        self.metrics_file.unlink(missing_ok=True)

    def _append(self, row: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")

    def step(self, row: dict[str, Any]) -> None:
        self._append(row)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}",
                             refresh=False)  # fmt: skip
        if self.tb is not None:
            for key in ("loss", "grad_norm", "lr", "tokens_per_s", "mfu"):
                self.tb.add_scalar(f"train/{key}", row[key], row["step"])

    def validation(self, step: int, loss: float) -> None:
        ppl = math.exp(min(loss, 50.0))
        self._append({"step": step, "val_loss": loss, "val_ppl": ppl})
        self.note(f"step {step}: validation loss {loss:.4f}, perplexity {ppl:.2f}")
        if self.tb is not None:
            self.tb.add_scalar("val/loss", loss, step)
            self.tb.add_scalar("val/perplexity", ppl, step)
            self.tb.flush()
        self.plot()

    def plot(self) -> None:
        if self.plot_enabled:
            plot_loss_curve(self.metrics_file, self.folder / "loss.png")

    def end_progress(self) -> None:
        self.bar.close()

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _tensorboard_writer(folder: Path, setting: str):
    if setting == "false":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if setting == "true":
            raise ConfigError("log.tensorboard=true, but tensorboard is not installed: pip install 'tnlm[train]'")
        return None
    return SummaryWriter(str(folder))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; a torn last line (the process was killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_loss_curve(metrics: Path, out: Path) -> bool:
    """Training loss (and its moving average) and validation loss against steps; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_metrics(metrics)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        ax.plot(steps, _moving_average(losses), color="tab:blue", label="train (moving average)")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def _moving_average(values: tuple[float, ...], window: int = 20) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out

