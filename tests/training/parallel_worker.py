"""One process of the distributed tests (not a test module): `test_parallel_dist.py` starts two of these
with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), and the first writes what
they measured to OUT/results.json. Every comparison is made by the test; this only trains and records.

    python tests/training/parallel_worker.py DATA_DIR OUT_DIR [slow]
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from tnlm.errors import TnlmError
from tnlm.ops.lightning import lightning_attn
from tnlm.ops.norm import srms_norm_reference
from tnlm.training import load_train_config
from tnlm.training.checkpoint import CheckpointManager, export_checkpoint
from tnlm.training.parallel import init_world
from tnlm.training.parallel.sequence import SequenceParallelAttention, StateLink, _local_cu_seqlens
from tnlm.training.parallel.tensor import TensorParallelSRMSNorm
from tnlm.training.run import build_trainer, restore, save

STEPS = 6
FAMILIES = {
    "transnormer": ("tnl-tiny", "{decoder_layers: 2, linear_use_lrpe_list: [1, 0]}"),
    "transformer": ("transformer-tiny", "{num_hidden_layers: 2, num_key_value_heads: 2}"),
    "infini": ("infini-tiny", "{num_hidden_layers: 2, segment_length: 32}"),
}
LAYOUTS = {"fsdp": ["parallel.dp_shard=2"], "tp": ["parallel.tp=2"], "sp": ["parallel.sp=2"],
           "sp_ac": ["parallel.sp=2", "train.activation_checkpointing=true"],
           "fsdp_ac_compile": ["parallel.dp_shard=2", "train.activation_checkpointing=true", "train.compile=true"]}
ONLY_TRANSNORMER = ("sp", "sp_ac", "fsdp_ac_compile")
# the slow launch (`... OUT_DIR slow`): compiling the tensor-parallel blocks takes half a minute here
SLOW_LAYOUTS = {"tp_ac_compile": ["parallel.tp=2", "train.activation_checkpointing=true", "train.compile=true"]}


def config(data: str, out: Path, family: str, *extra: str):
    name, overrides = FAMILIES[family]
    return load_train_config(None, [
        f"output={out}", f"data.path={data}", "data.seq_len=64", "data.batch_size=4", "data.mode=windows",
        f"model.name={name}", f"model.overrides={overrides}", "optimizer.lr=3e-3", "schedule.warmup_steps=2",
        f"train.steps={STEPS}", "eval.every=0", "eval.batches=2", "log.progress=false", "train.device=cpu", *extra,
    ])  # fmt: skip


def layout_world(cfg):
    return init_world(cfg.parallel, device_setting="cpu", timeout_s=60)


def losses(cfg, *, distributed: bool, steps: int = STEPS) -> list[float]:
    trainer, _ = build_trainer(cfg, world=layout_world(cfg) if distributed else None)
    return [trainer.train_step()["loss"] for _ in range(steps)]


def training_losses(data: str, out: Path) -> dict:
    """Per family: single-process and 2-way FSDP/TP (and SP for TransNormer) losses, same data and seed."""
    result = {}
    for family in FAMILIES:
        runs = {"single": losses(config(data, out, family), distributed=False)}
        for layout, extra in LAYOUTS.items():
            if layout in ONLY_TRANSNORMER and family != "transnormer":
                continue
            runs[layout] = losses(config(data, out, family, *extra), distributed=True)
        result[family] = runs
    varlen = ("data.mode=varlen", "data.batch_size=2")
    result["transnormer_varlen"] = {
        "single": losses(config(data, out, "transnormer", *varlen), distributed=False),
        "sp": losses(config(data, out, "transnormer", *varlen, "parallel.sp=2"), distributed=True),
    }
    return result


def tp_srms_norm(rank: int) -> dict:
    """The tensor-parallel SRMSNorm against the full-width one: output and input gradient."""
    world = init_world(config(".", Path("."), "transnormer", "parallel.tp=2").parallel, device_setting="cpu")
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 12, generator=gen, requires_grad=True)
    w = torch.randn(2, 5, 12, generator=gen)
    full = srms_norm_reference(x, 1e-6)
    (full * w).sum().backward()
    cols = slice(6 * rank, 6 * rank + 6)
    local = x.detach()[..., cols].clone().requires_grad_(True)
    y = TensorParallelSRMSNorm(1e-6, world.dims["tp"])(local)
    (y * w[..., cols]).sum().backward()
    return {"out": _rel(y, full[..., cols]), "grad": _rel(local.grad, x.grad[..., cols])}


def sp_attention(rank: int) -> dict:
    """Sequence-parallel lightning attention against one process: windows (B = 2) and packed documents
    with one crossing the split and one boundary exactly on it; outputs and all input gradients."""
    world = init_world(config(".", Path("."), "transnormer", "parallel.sp=2").parallel, device_setting="cpu")
    op = SequenceParallelAttention(StateLink(world.group("sp"), rank=rank, size=2))
    out = {}
    for case, (B, cu) in {"windows": (2, None), "crossing": (1, [0, 10, 37]), "on_split": (1, [0, 5, 18, 30, 37])}.items():
        gen = torch.Generator().manual_seed(3)
        q, k = (torch.randn(B, 37, 3, 5, generator=gen) * 0.5 for _ in range(2))
        v, do = torch.randn(B, 37, 3, 7, generator=gen), torch.randn(B, 37, 3, 7, generator=gen)
        decay = -torch.tensor([0.1, 0.5, 1.0])
        cu_full = None if cu is None else torch.tensor(cu, dtype=torch.int32)
        full = [t.clone().requires_grad_(True) for t in (q, k, v)]
        o, _ = lightning_attn(*full, decay, cu_seqlens=cu_full)
        (o * do).sum().backward()
        rows = slice(0, 18) if rank == 0 else slice(18, 37)
        mine = [t[:, rows].clone().requires_grad_(True) for t in (q, k, v)]
        cu_local = None if cu is None else _local_cu_seqlens(cu_full, start=rows.start, end=rows.stop)
        o_local, _ = op(*mine, decay, cu_seqlens=cu_local)
        (o_local * do[:, rows]).sum().backward()
        errors = [_rel(o_local, o[:, rows])] + [_rel(m.grad, f.grad[:, rows]) for m, f in zip(mine, full)]
        out[case] = max(_gather_max(e) for e in errors)
    return out


def checkpoints(data: str, out: Path, rank: int) -> dict:
    """2-way FSDP saves; the same layout resumes; 2-way TP and one process (export) reload it; a
    checkpoint of another model is refused on every process."""
    cfg = config(data, out / "fsdp", "transnormer", "parallel.dp_shard=2")
    manager = CheckpointManager(out / "fsdp" / "checkpoints", keep=3)
    world = layout_world(cfg)
    trainer, info = build_trainer(cfg, world=world)
    first = []
    for step in range(1, STEPS + 1):
        first.append(trainer.train_step()["loss"])
        if step in (3, STEPS):
            save(trainer, manager, data=info, world=world)
    ids = torch.randint(0, 500, (2, 40), generator=torch.Generator().manual_seed(5))
    result = {"trained": first, "logits": {}}
    reference = _logits(trainer.model, ids)
    again, _ = build_trainer(cfg, world=layout_world(cfg))
    restore(again, manager, 3, data=info)
    result["resumed"] = [again.train_step()["loss"] for _ in range(STEPS - 3)]
    tp_cfg = config(data, out / "fsdp", "transnormer", "parallel.tp=2")
    tp, _ = build_trainer(tp_cfg, world=layout_world(tp_cfg))
    restore(tp, manager, STEPS, data=info)
    result["logits"]["tp"] = _rel(_logits(tp.model, ids), reference)
    if rank == 0:
        import tnlm.models  # noqa: F401  (registers the families with transformers)
        from transformers import AutoModelForCausalLM

        export_checkpoint(manager.path(STEPS), out / "exported")
        plain = AutoModelForCausalLM.from_pretrained(out / "exported")
        result["logits"]["one_process"] = _rel(_logits(plain, ids), reference)
    dist.barrier()
    result["refusals"] = {}
    for what, extra in {"other_family": ("model.name=transformer-tiny", "model.overrides={num_hidden_layers: 2}"),
                        "other_shape": ("model.overrides={decoder_layers: 2, linear_use_lrpe_list: [1, 0], glu_dim: 256}",)}.items():  # fmt: skip
        other = config(data, out / "fsdp", "transnormer", "parallel.dp_shard=2", *extra)
        wrong, _ = build_trainer(other, world=layout_world(other))
        try:
            restore(wrong, manager, STEPS, data=info)
            result["refusals"][what] = None
        except TnlmError as e:
            result["refusals"][what] = f"{type(e).__name__}: {e}"
    return result


def bad_tp(data: str, out: Path) -> dict:
    """tp=2 on models whose heads it cannot split: refused on every process before anything waits."""
    found = {}
    for what, extra in {"heads": ("transnormer", "{decoder_layers: 2, linear_use_lrpe_list: [1, 0], decoder_attention_heads: 1}"),
                        "kv_heads": ("transformer", "{num_hidden_layers: 2, num_key_value_heads: 1}")}.items():  # fmt: skip
        family, overrides = extra
        cfg = config(data, out, family, "parallel.tp=2", f"model.overrides={overrides}")
        try:
            build_trainer(cfg, world=layout_world(cfg))
            found[what] = None
        except TnlmError as e:
            found[what] = f"{type(e).__name__}: {e}"
    dist.barrier()  # both processes got here: nobody hangs
    return found


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _gather_max(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


TWO_DIMENSIONAL = {"dp2_tp2": ("parallel.dp_shard=2", "parallel.tp=2"), "dp2_sp2": ("parallel.dp_shard=2", "parallel.sp=2"),
                   "sp2_tp2": ("parallel.sp=2", "parallel.tp=2")}  # fmt: skip


def against_one_process(data: str, out: Path, layouts: dict) -> dict:
    """TransNormer's losses in each of `layouts` (all processes) and in one process."""
    runs = {"single": losses(config(data, out, "transnormer"), distributed=False)}
    for name, extra in layouts.items():
        runs[name] = losses(config(data, out, "transnormer", *extra), distributed=True)
    return runs


def main(data: str, out: Path, *, slow: bool = False) -> None:
    torch.set_num_threads(1)
    world = init_world(config(data, out, "transnormer").parallel, device_setting="cpu", timeout_s=60)
    rank = dist.get_rank()
    if world.world_size == 4:  # 2-D meshes: FSDP2 x TP, FSDP2 x SP, SP x TP
        results = {"two_dimensional": against_one_process(data, out, TWO_DIMENSIONAL)}
    elif slow:
        results = {"slow": against_one_process(data, out, SLOW_LAYOUTS)}
    else:
        results = {
            "bad_tp": bad_tp(data, out),
            "tp_srms_norm": tp_srms_norm(rank),
            "sp_attention": sp_attention(rank),
            "losses": training_losses(data, out),
            "checkpoints": checkpoints(data, out, rank),
        }
    if rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main(sys.argv[1], Path(sys.argv[2]), slow=sys.argv[3:] == ["slow"])
    except BaseException:
        Path(sys.argv[2], f"error-{dist.get_rank() if dist.is_initialized() else 'x'}.txt").write_text(traceback.format_exc())
        raise
