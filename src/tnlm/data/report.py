"""The per-step report of a pipeline run: a JSON file and a printed table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tnlm.data.step import StepStats


@dataclass
class Report:
    steps: list[StepStats]
    output: str

    @property
    def docs_out(self) -> int:
        return self.steps[-1].docs_out if self.steps else 0

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "docs_out": self.docs_out, "steps": [s.to_json() for s in self.steps]}

    def table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"data pipeline -> {self.output}")
        for col in ("step", "docs in", "docs out", "removed", "MB in", "MB out", "MB/s", "top reasons"):
            table.add_column(col, justify="left" if col in ("step", "top reasons") else "right")
        for s in self.steps:
            rate = f"{s.bytes_in / 1e6 / s.seconds:.2f}" if s.seconds > 0 else "-"
            table.add_row(s.name, str(s.docs_in), str(s.docs_out), str(s.removed), f"{s.bytes_in / 1e6:.2f}",
                          f"{s.bytes_out / 1e6:.2f}", rate, _reasons(s))
        return table

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # logs and pipes: do not squeeze the table to 80 columns
            console = Console(width=160)
        console.print(self.table())


def _reasons(s: StepStats) -> str:
    """The top removal reasons; for the read step, every kind of skipped input with its count and
    where the first ones are (file:line, lines counted from 1), so a bad input is seen at once."""
    if s.name != "read":
        reasons = ", ".join(f"{k}={v}" for k, v in s.reasons.most_common(3))
        return reasons or ", ".join(f"{k}={v}" for k, v in s.counters.most_common(3) if k.isupper())
    skipped = s.reasons + Counter({k: v for k, v in s.counters.items() if not k.isupper()})
    counts = ", ".join(f"{k}={v}" for k, v in skipped.most_common())
    where = ", ".join(e["id"] for e in s.examples[:3])
    return f"{counts} (first at {where})" if counts and where else counts
