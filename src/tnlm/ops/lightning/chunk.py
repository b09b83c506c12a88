"""Lightning Attention-2 block algorithm in PyTorch: any device, linear time, hand-written backward.

The sequence is cut into blocks of `block` tokens. Inside a block the product is exact,
((Q K^T) * M) V with M[t, s] = lambda^(t-s) for t >= s; everything before the block reaches it
through a float32 running state S (Dk x Dv per head). See README.md in this folder for the math.

On a CPU the block loop is itself vectorised: `segment` consecutive blocks are processed by batched
matrix products, and the states at the block starts of a segment come from one small matrix product
with a (n+1) x (n+1) decay matrix (the scan) instead of a Python loop. Python only loops over
segments, so the per-token time does not grow with T, and no T x T tensor is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Chosen by measurement on the 2-core CPUs this project targets (benchmarks/attention.py --tune).
BLOCK = 64
SEGMENT_BLOCKS = 16


@dataclass(frozen=True)
class _Tables:
    """Decay factors of one segment of n blocks holding L real tokens (the last block may be short)."""

    mask: torch.Tensor  # (H, 1, C, C): lambda^(t-s) for t >= s, else 0
    q_decay: torch.Tensor  # (H, 1, C, 1): lambda^(t+1), t = position inside the block
    k_decay: torch.Tensor  # (H, n, C, 1): lambda^(block_end - 1 - t), 0 on padding
    scan: torch.Tensor  # (H, n+1, n+1): block-start states and the segment's final state


def _tables(a: torch.Tensor, *, block: int, n: int, length: int) -> _Tables:
    """a: (H,) float32 log-decay. All exponents are >= 0, so every factor is <= 1 (no overflow)."""
    C, dev = block, a.device
    t = torch.arange(C, device=dev, dtype=torch.float32)
    rel = t.view(-1, 1) - t.view(1, -1)
    lam = a.view(-1, 1, 1)
    mask = torch.where(rel >= 0, torch.exp(lam * rel.clamp(min=0)), 0.0).unsqueeze(1)
    q_decay = torch.exp(lam * (t + 1)).view(-1, 1, C, 1)
    pos = torch.arange(n * C, device=dev).view(n, C)  # position of each token in the segment
    end = ((torch.arange(n, device=dev) + 1) * C).clamp(max=length).view(n, 1)
    k_exp = (end - 1 - pos).clamp(min=0).float()
    k_decay = torch.where(pos < length, torch.exp(lam * k_exp), 0.0).unsqueeze(-1)
    starts = torch.cat([torch.arange(n, device=dev) * C, torch.tensor([length], device=dev)])
    ends = torch.cat([torch.zeros(1, device=dev, dtype=torch.long), end.view(-1)])
    gap = (starts.view(-1, 1) - ends.view(1, -1)).float()  # (n+1, n+1)
    lower = torch.ones(n + 1, n + 1, device=dev, dtype=torch.bool).tril()
    scan = torch.where(lower, torch.exp(lam * gap.clamp(min=0)), 0.0)
    return _Tables(mask=mask, q_decay=q_decay, k_decay=k_decay, scan=scan)


class _Workspace:
    """Buffers for one call's segment loop, reused by every segment of the same shape.

    PyTorch has no caching allocator on the CPU: a fresh multi-MiB temporary per product comes from
    new pages that the OS must zero, and at D = 128 that added 20-60% to the time of the products.
    Writing into these buffers (`out=` and in-place ops) makes the loop allocation-free after its
    first segment, so long sequences cost the same per token as short ones."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like, self.bufs = like, {}

    def __call__(self, name: str, *shape: int) -> torch.Tensor:
        buf = self.bufs.get(name)
        if buf is None or buf.shape != shape:
            buf = self.bufs[name] = self.like.new_empty(shape, dtype=torch.float32)
        return buf


def _blocks(x: torch.Tensor, ws: _Workspace, name: str, *, start: int, stop: int, block: int) -> torch.Tensor:
    """(B, T, H, D) slice [start, stop) -> (B, H, n, C, D) float32, zero-padded to whole blocks."""
    B, _, H, D = x.shape
    L = stop - start
    n = -(-L // block)
    out = ws(name, B, H, n, block, D)
    flat = out.view(B, H, n * block, D)
    flat[:, :, :L].copy_(x[:, start:stop].transpose(1, 2))
    if n * block > L:
        flat[:, :, L:].zero_()
    return out


def _unblocks(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H, n, C, D) -> (B, L, H, D), dropping the padding."""
    B, H, n, C, D = x.shape
    return x.reshape(B, H, n * C, D)[:, :, :length].transpose(1, 2)


def _scan(scan: torch.Tensor, s_in: torch.Tensor, u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """States before each of the n blocks: out[i] = sum_j scan[i, 1 + j] u[j] + scan[i, 0] s_in.
    scan (H, n+1, n+1) over [s_in; u], s_in (B, H, Dk, Dv), u and out (B, H, n, Dk, Dv)."""
    B, H, n, Dk, Dv = u.shape
    flat = out.view(B, H, n, Dk * Dv)
    torch.matmul(scan[:, :n, 1:], u.view(B, H, n, Dk * Dv), out=flat)
    flat.addcmul_(scan[:, :n, 0].view(1, H, n, 1), s_in.reshape(B, H, 1, Dk * Dv))
    return out


def _scan_last(scan: torch.Tensor, s_in: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The last row of the scan, the state after the segment, as a new (B, H, Dk, Dv) tensor."""
    B, H, n, Dk, Dv = u.shape
    last = scan[:, n:, 1:] @ u.view(B, H, n, Dk * Dv)  # (B, H, 1, Dk*Dv)
    return last.addcmul_(scan[:, n:, :1], s_in.reshape(B, H, 1, Dk * Dv)).view(B, H, Dk, Dv)


def _block_states(k, v, s_in, tab: _Tables, ws: _Workspace):
    """Decayed keys Gamma K, each block's own contribution u = (Gamma K)^T V, and the state before
    each block (the scan of u from s_in); forward and backward both start here."""
    B, H, n, C, Dk = k.shape
    Dv = v.shape[-1]
    kd = torch.mul(k, tab.k_decay, out=ws("kd", *k.shape))
    u = torch.matmul(kd.mT, v, out=ws("u", B, H, n, Dk, Dv))
    return kd, u, _scan(tab.scan, s_in, u, ws("s", B, H, n, Dk, Dv))


def _segment_fwd(q, k, v, s_in, tab: _Tables, ws: _Workspace):
    """q, k (B, H, n, C, Dk), v (B, H, n, C, Dv), s_in (B, H, Dk, Dv) -> (o like v, s_out)."""
    B, H, n, C, Dk = q.shape
    Dv = v.shape[-1]
    kd, u, s = _block_states(k, v, s_in, tab, ws)
    attn = torch.matmul(q, k.mT, out=ws("attn", B, H, n, C, C)).mul_(tab.mask)
    o = torch.matmul(attn, v, out=ws("o", B, H, n, C, Dv))
    qd = torch.mul(q, tab.q_decay, out=ws("qd", *q.shape))
    o.view(-1, C, Dv).baddbmm_(qd.view(-1, C, Dk), s.view(-1, Dk, Dv))
    return o, _scan_last(tab.scan, s_in, u)


def _segment_bwd(q, k, v, do, s_in, ds_out, tab: _Tables, ws: _Workspace):
    """Gradients of one segment given the state entering it and the gradient of the state leaving it."""
    B, H, n, C, Dk = q.shape
    Dv = v.shape[-1]
    kd, _, s = _block_states(k, v, s_in, tab, ws)  # recomputed
    qd = torch.mul(q, tab.q_decay, out=ws("qd", *q.shape))
    dp = torch.matmul(do, v.mT, out=ws("dp", B, H, n, C, C)).mul_(tab.mask)
    dq = torch.matmul(do, s.mT, out=ws("dq", *q.shape)).mul_(tab.q_decay)
    dq.view(-1, C, Dk).baddbmm_(dp.view(-1, C, C), k.view(-1, C, Dk))
    # r: gradient of each block-start state; the scan's transpose carries r and ds_out back to u, s_in
    r = torch.matmul(qd.mT, do, out=ws("r", B, H, n, Dk, Dv)).view(B, H, n, Dk * Dv)
    du = torch.matmul(tab.scan[:, :n, 1:].mT, r, out=ws("du", B, H, n, Dk, Dv).view(B, H, n, Dk * Dv))
    du.addcmul_(tab.scan[:, n, 1:].reshape(1, H, n, 1), ds_out.reshape(B, H, 1, Dk * Dv))
    ds_in = (tab.scan[:, :n, 0].reshape(1, H, 1, n) @ r).addcmul_(tab.scan[:, n:, :1], ds_out.reshape(B, H, 1, Dk * Dv))
    du = du.view(B, H, n, Dk, Dv)
    dk = torch.matmul(v, du.mT, out=ws("dk", *k.shape)).mul_(tab.k_decay)
    dk.view(-1, C, Dk).baddbmm_(dp.view(-1, C, C).mT, q.view(-1, C, Dk))
    attn = torch.matmul(q, k.mT, out=ws("attn", B, H, n, C, C)).mul_(tab.mask)
    dv = torch.matmul(kd, du, out=ws("dv", *v.shape))
    dv.view(-1, C, Dv).baddbmm_(attn.view(-1, C, C).mT, do.view(-1, C, Dv))
    return dq, dk, dv, ds_in.view(B, H, Dk, Dv)


def _empty(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer comes from here; the tests fill it with NaN so an unwritten element fails."""
    return like.new_empty(shape, dtype=dtype or like.dtype)


def segments(bos: int, eos: int, span: int) -> list[tuple[int, int]]:
    """[bos, eos) cut at every multiple of `span`: the pieces the block algorithm runs one at a time.

    A piece that starts on a multiple j * span enters with the state that `chunk_fwd` keeps as
    entries[j]; any other piece starts a sequence, with its initial state. So T tokens, packed or
    not, keep len(segments(0, T, span)) entry states, a number known from the shape alone.
    """
    if eos <= bos:
        return []
    cuts = [bos, *range((bos // span + 1) * span, eos, span), eos]
    return list(zip(cuts[:-1], cuts[1:]))


# Decay tables of recent calls, by (device, log-decay values, block, blocks, length): every layer of a
# model has its own decays and a prompt or a training step calls each layer with the same few segment
# lengths, so after the first call the tables are looked up, not rebuilt. Bounded: oldest out first.
_TABLES: dict[tuple, _Tables] = {}
_TABLES_MAX = 64  # at most ~11 MiB at H = 8, C = 64


def _cached_tables(a: torch.Tensor, *, block: int, length: int) -> _Tables:
    """The tables of a segment of `length` tokens for log-decay a (H,) float32, built once per key."""
    n = -(-length // block)
    key = (a.device, tuple(a.tolist()), block, n, length)
    tab = _TABLES.get(key)
    if tab is None:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in any later mode
            tab = _tables(a, block=block, n=n, length=length)
        if len(_TABLES) >= _TABLES_MAX:
            del _TABLES[next(iter(_TABLES))]
        _TABLES[key] = tab
    return tab


class _TableCache:
    """Decay tables per segment length for one call (one host read of the decays per call)."""

    def __init__(self, log_decay: torch.Tensor, block: int) -> None:
        self.a, self.block, self.cache = log_decay.detach().float(), block, {}

    def get(self, length: int) -> _Tables:
        if length not in self.cache:
            self.cache[length] = _cached_tables(self.a, block=self.block, length=length)
        return self.cache[length]


def _sequences(T: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int]]:
    """(bos, eos) of every sequence; one host sync for packed sequences."""
    if cu_seqlens is None:
        return [(0, T)]
    bounds = cu_seqlens.tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def _start_states(
    initial_state: torch.Tensor | None, *, n_seq: int, rows: int, like: torch.Tensor, dv: int
) -> list[torch.Tensor]:
    """The float32 (rows, H, Dk, Dv) state each sequence starts from: its rows of `initial_state`, or zeros."""
    if initial_state is None:
        return [like.new_zeros(rows, like.shape[2], like.shape[3], dv, dtype=torch.float32)] * n_seq
    s0 = initial_state.float()
    return [s0[i * rows : (i + 1) * rows] for i in range(n_seq)]


def chunk_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None = None,
    block: int = BLOCK,
    segment: int = SEGMENT_BLOCKS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns o (B, T, H, Dv) in q's dtype, the final state (N, H, Dk, Dv) float32, and the entry
    states (len(segments(0, T, span)), B', H, Dk, Dv) float32, all the backward needs to keep.
    N is B, or the number of sequences when `cu_seqlens` (B = 1) is given; B' is B, or 1."""
    B, T, H, _ = q.shape
    Dv, span = v.shape[-1], block * segment
    seqs = _sequences(T, cu_seqlens)
    rows = B if cu_seqlens is None else 1
    starts = _start_states(initial_state, n_seq=len(seqs), rows=rows, like=q, dv=Dv)
    o = _empty(q, B, T, H, Dv)
    entries = _empty(q, len(segments(0, T, span)), rows, H, q.shape[3], Dv, dtype=torch.float32)
    tabs, finals, ws = _TableCache(log_decay, block), [], _Workspace(q)
    for (bos, eos), s in zip(seqs, starts):
        for start, stop in segments(bos, eos, span):
            if start % span == 0:
                entries[start // span] = s
            qb, kb, vb = (_blocks(x, ws, name, start=start, stop=stop, block=block) for x, name in ((q, "q"), (k, "k"), (v, "v")))
            ob, s = _segment_fwd(qb, kb, vb, s, tabs.get(stop - start), ws)
            o[:, start:stop] = _unblocks(ob, stop - start)
        finals.append(s)
    return o, torch.cat(finals), entries


def chunk_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    do: torch.Tensor,
    *,
    initial_state: torch.Tensor | None,
    d_final: torch.Tensor | None,
    entries: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    block: int = BLOCK,
    segment: int = SEGMENT_BLOCKS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reverse sweep over segments; inside a segment the recomputed block states give dq (the
    forward sweep) and the scan's transpose gives dk, dv. Returns dq, dk, dv and d initial_state."""
    B, T, H, Dk = q.shape
    Dv, span = v.shape[-1], block * segment
    seqs = _sequences(T, cu_seqlens)
    rows = B if cu_seqlens is None else 1
    starts = _start_states(initial_state, n_seq=len(seqs), rows=rows, like=q, dv=Dv)
    dq, dk, dv = _empty(q, *q.shape), _empty(k, *k.shape), _empty(v, *v.shape)
    tabs, d_init, ws = _TableCache(log_decay, block), [], _Workspace(q)
    for i, (bos, eos) in reversed(list(enumerate(seqs))):
        ds = q.new_zeros(rows, H, Dk, Dv, dtype=torch.float32)
        if d_final is not None:
            ds = ds + d_final[i * rows : (i + 1) * rows].float()
        for start, stop in reversed(segments(bos, eos, span)):
            s_in = entries[start // span] if start % span == 0 else starts[i]
            qb, kb, vb, dob = (_blocks(x, ws, name, start=start, stop=stop, block=block)
                               for x, name in ((q, "q"), (k, "k"), (v, "v"), (do, "do")))
            grads = _segment_bwd(qb, kb, vb, dob, s_in, ds, tabs.get(stop - start), ws)
            for out, g in zip((dq, dk, dv), grads[:3]):
                out[:, start:stop] = _unblocks(g, stop - start)
            ds = grads[3]
        d_init.append(ds)
    return dq, dk, dv, torch.cat(d_init[::-1])
