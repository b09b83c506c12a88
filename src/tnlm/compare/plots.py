"""The comparison's PNG plots: loss against training tokens and against training time, training speed
against sequence length, decoding speed and state memory against context length."""

from __future__ import annotations

from pathlib import Path

from tnlm.data.files import atomic_path

MB = 2**20


def plot_all(report: dict, out: Path) -> list[str]:
    """Write the plots into `out`; returns their file names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for name, draw in (("loss_vs_tokens.png", _loss_vs("tokens", "training tokens")),
                       ("loss_vs_time.png", _loss_vs("seconds", "training time (s)")),
                       ("train_speed.png", _train_speed), ("decode_speed.png", _decode_speed)):  # fmt: skip
        fig = draw(plt, report)
        if fig is None:
            continue
        fig.tight_layout()
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def moving_average(values: list[float], window: int = 20) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def _loss_vs(key: str, label: str):
    def draw(plt, report: dict):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, m in enumerate(report["models"]):
            c, color = m["curve"], f"C{i}"
            if c["loss"]:
                ax.plot(c[key], c["loss"], color=color, alpha=0.25, linewidth=0.8)
                ax.plot(c[key], moving_average(c["loss"]), color=color, label=f"{m['name']} (train, average)")
            if c["val"]:
                ax.plot([v[key] for v in c["val"]], [v["val_loss"] for v in c["val"]], "o--", color=color,
                        label=f"{m['name']} (validation)")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Same data, seed and {report['plan']['tokens']:,} tokens per model")
        return fig

    return draw


def _train_speed(plt, report: dict):
    if not any(m["speed"]["train"] for m in report["models"]):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in report["models"]:
        rows = [r for r in m["speed"]["train"] if "skipped" not in r]
        ax.plot([r["length"] for r in rows], [r["tokens_per_s"] for r in rows], "o-", label=m["name"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length (same tokens per step)")
    ax.set_ylabel("training tokens/s")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _decode_speed(plt, report: dict):
    if not any(m["speed"]["decode"] for m in report["models"]):
        return None
    fig, (ax_ms, ax_mb) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in report["models"]:
        rows = [r for r in m["speed"]["decode"] if "skipped" not in r]
        contexts = [r["context"] for r in rows]
        ax_ms.plot(contexts, [r["ms_per_token"] for r in rows], "o-", label=m["name"])
        ax_mb.plot(contexts, [(r["state_bytes"] or 0) / MB for r in rows], "o-", label=m["name"])
    for ax, ylabel in ((ax_ms, "ms per generated token"), (ax_mb, "decoding state (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
