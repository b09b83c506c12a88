"""Evaluation results: one JSON file (written atomically) and a printed table.

JSON layout: {"model", "tnlm_version", "date", "config", "results": [{"task", "metric", "value",
"stderr", "items", ...}], "skipped": {task: [{"doc_id", "reason"}]}, "perplexity": {...},
"passkey": {...}}. Values are fractions (acc 0.62, not 62), as lm-evaluation-harness writes them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tnlm.evaluation.multiple_choice import TaskResult
from tnlm.evaluation.passkey import PasskeyResult
from tnlm.evaluation.perplexity import PerplexityResult


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else float(x)


@dataclass
class EvalReport:
    model: str
    config: dict = field(default_factory=dict)
    tasks: list[TaskResult] = field(default_factory=list)
    perplexity: PerplexityResult | None = None
    passkey: PasskeyResult | None = None
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def rows(self) -> list[dict]:
        rows = []
        for t in self.tasks:
            for metric, (value, stderr) in t.metrics.items():
                rows.append({
                    "task": t.task, "metric": metric, "value": _finite(value), "stderr": _finite(stderr),
                    "items": t.items, "split": t.split, "num_fewshot": t.num_fewshot,
                    "paper_metric": metric == t.paper_metric, "context_reuse": t.context_reuse,
                    "skipped": len(t.skipped), "seconds": round(t.seconds, 3),
                })  # fmt: skip
        if self.perplexity is not None:
            p = self.perplexity
            for metric, value in p.metrics().items():
                rows.append({"task": "perplexity", "metric": metric, "value": _finite(value), "stderr": None,
                             "items": p.documents, "tokens": p.tokens, "bytes": p.bytes, "mode": p.describe()})  # fmt: skip
        if self.passkey is not None:
            for r in self.passkey.rows():
                rows.append({"task": "passkey", "metric": f"acc@{r['length']}/depth{r['depth']:.2f}",
                             "value": r["accuracy"], "stderr": None, "items": r["trials"], **r})  # fmt: skip
        return rows

    def to_dict(self) -> dict:
        import tnlm

        out = {"model": self.model, "tnlm_version": tnlm.__version__, "date": self.date, "config": self.config,
               "results": self.rows(),
               "skipped": {t.task: [{"doc_id": s.doc_id, "reason": s.reason} for s in t.skipped] for t in self.tasks if t.skipped}}  # fmt: skip
        if self.perplexity is not None:
            p = self.perplexity
            out["perplexity"] = {"mode": p.mode, "description": p.describe(), "window": p.window, "stride": p.stride,
                                 "chunk_size": p.chunk_size, "documents": p.documents, "tokens": p.tokens,
                                 "bytes": p.bytes, "words": p.words, "nll": p.nll, **{k: _finite(v) for k, v in p.metrics().items()}}  # fmt: skip
        if self.passkey is not None:
            out["passkey"] = {"training_length": self.passkey.training_length, "trials": self.passkey.trials,
                              "table": self.passkey.rows(), "answers": self.passkey.answers}  # fmt: skip
        return out


def write_json(data: dict, path: str | Path) -> Path:
    """Write to a temporary file beside the target, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_SPLITS = {"validation": "val"}


def _fmt(x: float | None, pct: bool) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}" if pct else f"{x:.4g}"


def print_report(report: EvalReport, *, console=None) -> None:
    """The results as tables: tasks (values in %, the paper's metric marked *), perplexity, passkey."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.tasks:
        console.print(f"{report.model}: multiple choice, values in % (* = the metric the TransNormerLLM paper reports)")
        table = Table()
        for col in ("task", "split", "shots", "metric", "value", "± stderr", "items", "skipped"):
            table.add_column(col, justify="left" if col in ("task", "split", "metric") else "right", no_wrap=col == "task")
        for t in report.tasks:
            for metric, (value, stderr) in t.metrics.items():
                mark = "*" if metric == t.paper_metric else ""
                table.add_row(t.task, _SPLITS.get(t.split, t.split), str(t.num_fewshot), metric + mark, _fmt(_finite(value), True),
                              _fmt(_finite(stderr), True), str(t.items), str(len(t.skipped)))  # fmt: skip
        console.print(table)
    if report.perplexity is not None:
        p = report.perplexity
        console.print(f"perplexity: {p.documents} documents, {p.tokens} tokens, {p.bytes} bytes; {p.describe()}")
        table = Table()
        for col in ("token ppl", "byte ppl", "bits/byte", "word ppl"):
            table.add_column(col, justify="right")
        m = p.metrics()
        table.add_row(*(_fmt(_finite(m[k]), False) for k in ("token_perplexity", "byte_perplexity", "bits_per_byte", "word_perplexity")))
        console.print(table)
    if report.passkey is not None:
        pk = report.passkey
        trained = pk.training_length if pk.training_length is not None else "unknown"
        console.print(f"passkey retrieval accuracy: {pk.trials} keys per cell; training length {trained}; * = beyond it")
        table = Table()
        table.add_column("depth \\ length")
        for n in pk.lengths:
            table.add_column(f"{n}{'*' if pk.beyond_training(n) else ''}", justify="right")
        for d in pk.depths:
            table.add_row(f"{d:.2f}", *(f"{pk.accuracy[(n, d)]:.2f}" for n in pk.lengths))
        console.print(table)
