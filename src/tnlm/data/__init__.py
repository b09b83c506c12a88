"""Pretraining data: sources, cleaning steps, a resumable pipeline, tokenizer training, packing and loading."""

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.step import Filter, GlobalStep, Mapper, Step, StepStats

__all__ = ["DataError", "Document", "Filter", "GlobalStep", "Mapper", "Step", "StepStats"]
