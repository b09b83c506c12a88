"""Sequence parallelism for linear attention: a long sequence split across processes (the LASP idea).

Decayed linear attention carries everything the past contributes in one state per head, (Dk, Dv)
float32, whatever the length. So process r of the sequence-parallel group runs tokens
[r T / P, (r + 1) T / P) through every layer like a single process would, except that each layer's
block algorithm starts from the state process r - 1 ended that layer with and hands its own final
state to process r + 1:

    forward   r - 1 --state_l--> r --state_l--> r + 1          (per layer l, after r - 1's block op)
    backward  r - 1 <--dstate_l-- r <--dstate_l-- r + 1         (the gradient of that state)

Outputs and gradients equal the single process's (`lightning_attn`'s `initial_state` and final state
are exact, and so are their gradients). Every process holds the activations of T / P tokens: the
longest trainable sequence grows linearly with P, at the price of one (B, H, Dk, Dv) message per
layer each way and a pipeline fill of P - 1 layers. Only families whose token mixer is linear
attention (TransNormer) can do this; softmax attention needs every key.

Packed documents (cu_seqlens) work too. A process's slice starts inside a document or at a boundary;
the slice's local cu_seqlens says which: by the convention of `split_batch`, a slice that starts at a
document boundary begins with an empty sequence (dropped before the block op, which then starts that
document from a zero state); otherwise its first sequence continues from the state that arrives. Its
last sequence's final state is sent on either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from tnlm.errors import InputError
from tnlm.ops.lightning import lightning_attn


class _Receive(torch.autograd.Function):
    """Forward: the state from the previous process. Backward: its gradient goes back there."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, shape: tuple[int, ...], link: StateLink) -> torch.Tensor:
        ctx.link = link
        state = anchor.new_empty(shape, dtype=torch.float32)
        dist.recv(state, src=link.prev, group=link.group)
        return state

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        dist.send(grad.contiguous(), dst=ctx.link.prev, group=ctx.link.group)
        return None, None, None


class _Send(torch.autograd.Function):
    """Forward: the final state goes to the next process; returns `out` unchanged. Backward: the
    gradient of that state arrives from there and joins the layer's backward."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, state: torch.Tensor, link: StateLink) -> torch.Tensor:
        ctx.link, ctx.shape = link, state.shape
        dist.send(state.detach().contiguous(), dst=link.next, group=link.group)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        d_state = grad_out.new_empty(ctx.shape, dtype=torch.float32)
        dist.recv(d_state, src=ctx.link.next, group=ctx.link.group)
        return grad_out, d_state, None


class StateLink:
    """Where this process's states come from and go to: global ranks in the sequence-parallel group."""

    def __init__(self, group, *, rank: int, size: int) -> None:
        self.group, self.rank, self.size = group, rank, size
        self.prev = dist.get_global_rank(group, rank - 1) if rank > 0 else None
        self.next = dist.get_global_rank(group, rank + 1) if rank < size - 1 else None


class SequenceParallelAttention:
    """A drop-in `block_attn` for NormLinearAttention (one per layer): lightning_attn on this process's
    slice, starting from the previous process's final state and handing its own to the next.

    Under activation checkpointing the backward pass runs the layer's forward again to rebuild what it
    did not keep; that second run must not exchange states (the other processes are not sending
    them again): it reuses the state this layer received in the first run and sends nothing.
    """

    def __init__(self, link: StateLink) -> None:
        self.link = link
        self._received: torch.Tensor | None = None  # this layer's last incoming state, for a recompute

    def __call__(self, q, k, v, log_decay, *, initial_state=None, output_final_state=False, cu_seqlens=None):
        if initial_state is not None:
            raise InputError("sequence parallelism trains from empty states; it takes no initial_state")
        B, _, H, Dk = q.shape
        Dv = v.shape[-1]
        carried = B if cu_seqlens is None else 1  # rows of state that cross the slice boundary
        fresh = cu_seqlens is not None and int(cu_seqlens[1]) == 0  # the slice starts a document
        if fresh:
            cu_seqlens = cu_seqlens[1:]
        initial, recomputing = None, _in_backward()
        if self.link.prev is not None:
            if recomputing:
                incoming = self._received.detach().requires_grad_(q.requires_grad)
            else:
                incoming = _Receive.apply(q, (carried, H, Dk, Dv), self.link)
                self._received = incoming.detach()
            if fresh:  # the state does not reach this slice; the product keeps its (zero) gradient flowing back
                incoming = incoming * 0.0
            initial = incoming
            if cu_seqlens is not None and cu_seqlens.numel() > 2:
                initial = torch.cat([incoming, incoming.new_zeros(cu_seqlens.numel() - 2, H, Dk, Dv)])
        need_final = output_final_state or self.link.next is not None
        o, final = lightning_attn(q, k, v, log_decay, initial_state=initial, output_final_state=need_final,
                                  cu_seqlens=cu_seqlens)  # fmt: skip
        if self.link.next is not None and not recomputing:
            o = _Send.apply(o, final[-carried:], self.link)
        return o, (final if output_final_state else None)


def _in_backward() -> bool:
    """Whether autograd's engine is running (a checkpointed layer is being recomputed)."""
    return torch._C._current_graph_task_id() != -1


def split_batch(batch: dict, *, rank: int, size: int) -> dict:
    """This process's slice of every sequence of `batch` (input_ids, labels, position_ids (B, T) and
    cu_seqlens), with the absolute positions the model needs (LRPE) and local cu_seqlens by the
    convention of this module's docstring."""
    T = batch["input_ids"].shape[1]
    bounds = [T * r // size for r in range(size + 1)]
    start, end = bounds[rank], bounds[rank + 1]
    if end <= start:
        raise InputError(f"sequence parallelism over {size} processes needs sequences of at least {size} tokens; got {T}")
    out = {k: v for k, v in batch.items() if k not in ("input_ids", "labels", "position_ids", "cu_seqlens", "max_seqlen")}
    for key in ("input_ids", "labels"):
        out[key] = batch[key][:, start:end]
    positions = batch.get("position_ids")
    if positions is None:
        positions = torch.arange(T, device=batch["input_ids"].device).unsqueeze(0)
    out["position_ids"] = positions[:, start:end]
    if batch.get("cu_seqlens") is not None:
        out["cu_seqlens"] = _local_cu_seqlens(batch["cu_seqlens"], start=start, end=end)
    return out


def _local_cu_seqlens(cu: torch.Tensor, *, start: int, end: int) -> torch.Tensor:
    bounds = cu.tolist()
    inner = [b - start for b in bounds if start < b < end]
    head = [0, 0] if start in bounds else [0]  # a leading empty sequence: the slice starts a document
    return torch.tensor(head + inner + [end - start], dtype=cu.dtype, device=cu.device)
