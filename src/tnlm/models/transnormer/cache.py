"""The decoding state of a TransNormer model: one float32 (B, H, Dk, Dv) matrix per layer."""

from __future__ import annotations

import torch

from tnlm.models.cache import LayerCache


class TransnormerCache(LayerCache[torch.Tensor]):
    """Recurrent state per layer. Its size does not depend on the number of tokens seen: this is
    what makes TransNormerLLM decode in constant memory."""
