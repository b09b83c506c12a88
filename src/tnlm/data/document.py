"""The unit that flows through every data step: a text with a stable id and free-form metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """One document. `id` is stable across runs (sources derive it from the file and line), so
    reports, dedup decisions and resumed runs can name a document unambiguously."""

    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": self.metadata}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Document:
        return cls(text=row["text"], id=str(row["id"]), metadata=dict(row.get("metadata") or {}))
