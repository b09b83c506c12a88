"""KVBuffer (the Transformer's growing KV cache) against torch.cat of every chunk."""

import torch

from tnlm.layers.softmax_attention import KVBuffer


def test_appends_equal_concatenation_across_reallocations():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(2, n, 3, 5, generator=g) for n in (7, 1, 1, 300, 1, 2, 64, 1)]
    buf = KVBuffer(chunks[0], chunks[0] * 2)
    capacities = {buf.capacity}
    for i, c in enumerate(chunks[1:], start=2):
        buf.append(c, c * 2)
        capacities.add(buf.capacity)
        want = torch.cat(chunks[:i], dim=1)
        assert torch.equal(buf.k, want) and torch.equal(buf.v, want * 2)
    assert buf.length == sum(c.shape[1] for c in chunks) <= buf.capacity
    assert len(capacities) <= 3  # reallocated rarely, not per token
    assert buf.nbytes() == 2 * buf.capacity * 2 * 3 * 5 * 4
