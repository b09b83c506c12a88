"""report.md from report.json: the summary table, the speed tables, tasks, samples and plots.

Each cell is one number of report.json, formatted by FORMATS (so a test can read the table back).
"""

from __future__ import annotations

from typing import Any

FORMATS = {
    "parameters": lambda x: f"{x / 1e6:.2f}M",
    "lr": lambda x: f"{x:.0e}",
    "val_loss": lambda x: f"{x:.4f}",
    "token_perplexity": lambda x: f"{x:.2f}",
    "bits_per_byte": lambda x: f"{x:.3f}",
    "tokens_per_s": lambda x: f"{x:,.0f}",
    "ms_per_token": lambda x: f"{x:.2f}",
    "state_mb": lambda x: f"{x:.3f}",
    "percent": lambda x: f"{100 * x:.1f}",
}
MB = 2**20


def fmt(kind: str, value: Any) -> str:
    return "-" if value is None else FORMATS[kind](value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _decode_at(model: dict, context: int | None) -> dict:
    return next((r for r in model["speed"]["decode"] if r["context"] == context and "skipped" not in r), {})


def longest_context(report: dict) -> int | None:
    """The longest context every model decoded (the summary table's speed column)."""
    sets = [{r["context"] for r in m["speed"]["decode"] if "skipped" not in r} for m in report["models"]]
    common = set.intersection(*sets) if sets else set()
    return max(common) if common else None


def summary_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The summary table: one row per model."""
    ctx = longest_context(report)
    header = ["model", "family", "parameters", "lr", "val loss", "val ppl", "bits/byte", "train tokens/s"]
    if ctx is not None:
        header += [f"decode ms/token @ {ctx}", f"state MB @ {ctx}"]
    rows = []
    for m in report["models"]:
        e, d = m["eval"], _decode_at(m, ctx)
        row = [m["name"], m["family"], fmt("parameters", m["parameters"]), fmt("lr", m["lr"]),
               fmt("val_loss", e.get("val_loss")), fmt("token_perplexity", e.get("token_perplexity")),
               fmt("bits_per_byte", e.get("bits_per_byte")), fmt("tokens_per_s", m["train"].get("tokens_per_s_median"))]  # fmt: skip
        if ctx is not None:
            state = d.get("state_bytes")
            row += [fmt("ms_per_token", d.get("ms_per_token")), fmt("state_mb", None if state is None else state / MB)]
        rows.append(row)
    return header, rows


def speed_tables(report: dict) -> list[str]:
    models = report["models"]
    lines = []
    lengths = sorted({r["length"] for m in models for r in m["speed"]["train"]})
    if lengths:
        lines += ["", "## Training speed", "", "Tokens per second of a training step (forward, backward, AdamW) "
                  "with the same number of tokens per step at every sequence length; fastest of the timed steps.", ""]  # fmt: skip
        by = {(m["name"], r["length"]): r for m in models for r in m["speed"]["train"]}
        rows = [[str(n)] + [_cell(by.get((m["name"], n)), "tokens_per_s") for m in models] for n in lengths]
        lines += table(["sequence length"] + [f"{m['name']} tokens/s" for m in models], rows)
    contexts = sorted({r["context"] for m in models for r in m["speed"]["decode"]})
    if contexts:
        lines += ["", "## Decoding", "", "Milliseconds per generated token after a prompt of this many tokens "
                  "(best round's mean), and the memory the decoding state holds.", ""]  # fmt: skip
        by = {(m["name"], r["context"]): r for m in models for r in m["speed"]["decode"]}
        rows = []
        for c in contexts:
            cells = [_cell(by.get((m["name"], c)), "ms_per_token") for m in models]
            cells += [_state_cell(by.get((m["name"], c))) for m in models]
            rows.append([str(c), *cells])
        header = ["context"] + [f"{m['name']} ms/token" for m in models] + [f"{m['name']} state MB" for m in models]
        lines += table(header, rows)
    return lines


def _cell(row: dict | None, key: str) -> str:
    if row is None:
        return "-"
    return row["skipped"] if "skipped" in row else fmt(key, row.get(key))


def _state_cell(row: dict | None) -> str:
    if row is None or "skipped" in row or row.get("state_bytes") is None:
        return "-"
    return fmt("state_mb", row["state_bytes"] / MB)


def _task_table(report: dict) -> list[str]:
    models = report["models"]
    tasks = sorted({t["task"] for m in models for t in m["eval"].get("tasks", [])})
    if not tasks:
        return []
    by = {(m["name"], t["task"]): t for m in models for t in m["eval"].get("tasks", [])}
    rows = []
    for task in tasks:
        metric = next(by[k]["metric"] for k in by if k[1] == task)
        rows.append([task, metric] + [fmt("percent", by.get((m["name"], task), {}).get("value")) for m in models])
    return ["", "## Multiple choice (%)", ""] + table(["task", "metric"] + [m["name"] for m in models], rows)


def _samples(report: dict) -> list[str]:
    lines = []
    for m in report["models"]:
        for s in m["samples"]:
            lines += [f"**{m['name']}**, prompt {s['prompt']!r}:", "", "```text", s["prompt"] + s["text"], "```", ""]
    return ["", "## Samples", ""] + lines if lines else []


def render(report: dict) -> str:
    d, p = report["data"], report["plan"]
    names = ", ".join(m["name"] for m in report["models"])
    lines = [
        f"# Comparison: {names}", "",
        f"Same data ({d['path']}, {d['mode']} of {d['seq_len']} tokens, batch {d['batch_size']}), same seed "
        f"({d['seed']}), same budget: {p['steps']} steps x {p['tokens_per_step']:,} = {p['tokens']:,} training "
        f"tokens per model ({p['basis']}). One run on {report['machine']['cpu']}, {report['machine']['threads']} "
        f"threads, {report['date']}; every number below is in report.json.", "",
    ]  # fmt: skip
    if report["verdict"]:
        lines += [f"**{report['verdict']['text']}**", ""]
    header, rows = summary_rows(report)
    lines += table(header, rows)
    lines += ["", "val loss: nats per token on the whole validation split, in windows of the training length "
              "(the same windows for every model); train tokens/s: the median step of the run itself."]  # fmt: skip
    lines += speed_tables(report) + _task_table(report) + _samples(report)
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{name[:-4].replace('_', ' ')}]({name})" for name in report["plots"]]
    lines += ["", "## Models", ""]
    for m in report["models"]:
        extra = f", overrides {m['overrides']}" if m["overrides"] else ""
        extra += f", settings {m['settings']}" if m["settings"] else ""
        lines.append(f"- {m['name']}: {m['model']}{extra}; lr {m['lr']:g}, warm-up {m['warmup_steps']} steps; "
                     f"run {m['run_dir']}, model {m['model_dir']}")  # fmt: skip
    return "\n".join(lines) + "\n"
