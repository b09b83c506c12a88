"""OUTPUT/README.md: what the quickstart found (every number read from the comparison's report.json and
the stage records of this run), where everything is, and the commands to go on."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from tnlm.compare.markdown import MB, fmt, speed_tables, summary_rows, table
from tnlm.data.files import write_text_atomic
from tnlm.quickstart import stages
from tnlm.quickstart.plan import Budget, Options, State, clock

SUMMARY = "README.md"


def _by_name(report: dict) -> tuple[dict, dict]:
    models = {m["name"]: m for m in report["models"]}
    return models[stages.TNL_NAME], models[stages.TRANSFORMER_NAME]


def quality_line(report: dict) -> str:
    tnl, tf = _by_name(report)
    a, b = tnl["eval"]["val_loss"], tf["eval"]["val_loss"]
    winner = "TransNormer" if a < b else "Transformer"
    return (f"- **Quality**: after the same {report['plan']['tokens']:,} training tokens, validation loss "
            f"{fmt('val_loss', a)} (TransNormer) vs {fmt('val_loss', b)} (Transformer): the {winner} is lower "
            f"by {fmt('val_loss', abs(a - b))} nats per token at this size and budget.")  # fmt: skip


def training_speed_line(report: dict) -> str | None:
    tnl, tf = _by_name(report)
    pairs = [(r["length"], r["tokens_per_s"], q["tokens_per_s"]) for r in tnl["speed"]["train"]
             for q in tf["speed"]["train"] if r["length"] == q["length"] and "skipped" not in r and "skipped" not in q]  # fmt: skip
    if not pairs:
        return None
    cells = "; ".join(f"{n}: {fmt('tokens_per_s', a)} vs {fmt('tokens_per_s', b)} tokens/s ({a / b:.2f}x)"
                      for n, a, b in pairs)  # fmt: skip
    return f"- **Training speed** (TransNormer vs Transformer, same tokens per step, by sequence length): {cells}."


def decoding_line(report: dict) -> str | None:
    tnl, tf = _by_name(report)
    rows = {m: {r["context"]: r for r in x["speed"]["decode"] if "skipped" not in r} for m, x in (("tnl", tnl), ("tf", tf))}
    common = sorted(set(rows["tnl"]) & set(rows["tf"]))
    if not common:
        return None
    lo, hi = common[0], common[-1]

    def state(m: str, c: int) -> str:
        value = rows[m][c].get("state_bytes")
        return "-" if value is None else fmt("state_mb", value / MB)

    return (f"- **Decoding** (ms per generated token, and the decoding state in MB, after {lo} and {hi} tokens "
            f"of context): TransNormer {fmt('ms_per_token', rows['tnl'][lo]['ms_per_token'])} -> "
            f"{fmt('ms_per_token', rows['tnl'][hi]['ms_per_token'])} ms, state {state('tnl', lo)} -> "
            f"{state('tnl', hi)} MB; Transformer {fmt('ms_per_token', rows['tf'][lo]['ms_per_token'])} -> "
            f"{fmt('ms_per_token', rows['tf'][hi]['ms_per_token'])} ms, KV cache {state('tf', lo)} -> "
            f"{state('tf', hi)} MB.")  # fmt: skip


def stage_rows(state: State) -> list[list[str]]:
    from tnlm.quickstart.run import TITLES

    return [[name, TITLES[name], clock(record["wall_s"])] for name, record in state.data["stages"].items()]


def where_lines(out: Path) -> list[str]:
    c = stages.compare_dir(out)
    return [
        f"- this summary: {out / SUMMARY}; every number of the run: {out / 'quickstart.json'} and {c / 'report.json'}",
        f"- the comparison's full report and plots: {c / 'report.md'}, {c}/*.png",
        f"- cleaned text and the cleaning report: {stages.clean_dir(out)} (report.json)",
        f"- the tokenizer: {stages.tokenizer_dir(out)}; token shards: {stages.packed_dir(out)}",
        f"- pretrained models: {c / 'runs' / stages.TNL_NAME / 'model'}, {c / 'runs' / stages.TRANSFORMER_NAME / 'model'}"
        " (their runs beside them: config.yaml, metrics.jsonl, checkpoints/)",
        f"- the chat model: {stages.chat_dir(out) / 'model'} (the LoRA adapter: {stages.chat_dir(out) / 'adapter'})",
    ]  # fmt: skip


def next_commands(out: Path) -> list[str]:
    """The commands to go on, each after a comment line that says what it does."""
    tnl = stages.compare_dir(out) / "runs" / stages.TNL_NAME / "model"
    packed = stages.packed_dir(out)
    return [
        "# talk to the fine-tuned model (/reset starts over, /exit quits)",
        f"tnlm chat {stages.chat_dir(out) / 'model'}",
        "# serve it to OpenAI clients (pip install -e '.[serve]'; http://127.0.0.1:8000/v1)",
        f"tnlm serve {stages.chat_dir(out) / 'model'}",
        "# continue a text with the pretrained TransNormer",
        f'tnlm generate {tnl} "The for statement"',
        "# train both models longer (an hour of training), or compare the paper's ablations",
        f"tnlm compare configs/compare/tnl-vs-transformer.yaml training.data.path={packed} budget.seconds=3600 "
        "output=runs/compare-1h",
        f"tnlm compare configs/compare/ablations.yaml training.data.path={packed}",
        "# multiple-choice tasks, read from their original files in DATA/piqa, DATA/arc, ...",
        f"tnlm eval {tnl} --tasks piqa,arc_easy --data-dir DATA",
        "# the released 385M shape on a GPU, on your own shards (tnlm data run / tokenizer train / data pack)",
        "tnlm train configs/train/tnl-385m-gpu.yaml data.path=YOUR_SHARDS",
    ]


def render(options: Options, out: Path, state: State, budget: Budget, report: dict) -> str:
    header, rows = summary_rows(report)
    chat = state.done("chat") or {"exchanges": []}
    lines = [
        "# tnlm quickstart", "",
        f"One run of `tnlm quickstart` on {platform.processor() or platform.machine()} with "
        f"{report['machine']['threads']} threads, {report['date']}, budget {clock(budget.total_s)} "
        f"(`--minutes {options.minutes:g}`); data: {options.data or 'the built-in corpus'}. Every number below "
        "comes from this run.", "",
        "## What it shows", "",
        quality_line(report),
        *(line for line in (training_speed_line(report), decoding_line(report)) if line), "",
        f"**{report['verdict']['text']}**", "",
        *table(header, rows), "",
        "val loss: nats per token on the whole validation split, in windows of the training length; "
        "train tokens/s: the median step of the run itself.",
        *speed_tables(report), "",
        "## The chat model", "",
        f"tnl-tiny after pretraining, with LoRA adapters trained {state.done('finetune')['steps']} steps on the "
        "shipped chat set (questions about Python functions), asked held-out questions (greedy):", "",
    ]  # fmt: skip
    for x in chat["exchanges"]:
        answer = x["answer"] or "(an empty reply)"
        lines += [f"- you: {x['question']}", f"  - model: {answer}", f"  - the chat set says: {x['expected']}"]
    lines += ["", "## Stages", ""]
    lines += table(["stage", "what", "wall time"], stage_rows(state) + [["all", "", clock(state.spent_s())]])
    lines += ["", "## Plots", ""] + [f"![{p[:-4]}](compare/{p})" for p in report.get("plots", [])]
    lines += ["", "## Where everything is", "", *where_lines(out), "", "## Go on", "", "```bash",
              *next_commands(out), "```"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_summary(options: Options, out: Path, state: State, budget: Budget) -> dict[str, Any]:
    report = json.loads((stages.compare_dir(out) / "report.json").read_text(encoding="utf-8"))
    write_text_atomic(out / SUMMARY, render(options, out, state, budget, report))
    return {"summary": str(out / SUMMARY)}


def terminal_summary(out: Path) -> str:
    """What the terminal shows at the end: the findings and the chat, then where the rest is."""
    text = (out / SUMMARY).read_text(encoding="utf-8")
    head = text.split("## Stages")[0].split("## What it shows", 1)[-1]
    return "\n".join(line for line in head.strip().splitlines()) + f"\n\nthe whole summary: {out / SUMMARY}"
