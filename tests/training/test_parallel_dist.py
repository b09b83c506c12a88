"""Two CPU processes (gloo) train and checkpoint together: every layout gives the losses of one process.

One torchrun launch of tests/training/parallel_worker.py measures everything (a process start costs more
than all the training here); the tests below judge what it wrote.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO
from tests.helpers.distributed import torchrun

REL = 1e-5


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("parallel")
    done = torchrun(2, str(REPO / "tests" / "training" / "parallel_worker.py"), str(corpus), str(out))
    errors = "".join(p.read_text() for p in out.glob("error-*.txt"))
    assert done.returncode == 0 and (out / "results.json").is_file(), f"{errors}\n{done.output[-4000:]}"
    return json.loads((out / "results.json").read_text())


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) >= 5 and all(abs(x - y) <= REL * abs(y) for x, y in zip(a, b))


@pytest.mark.parametrize("family, layout", [
    ("transnormer", "fsdp"), ("transnormer", "tp"), ("transnormer", "sp"), ("transnormer", "sp_ac"),
    ("transnormer", "fsdp_ac_compile"),
    ("transformer", "fsdp"), ("transformer", "tp"), ("infini", "fsdp"), ("infini", "tp"),
    ("transnormer_varlen", "sp"),
])  # fmt: skip
def test_two_processes_train_like_one(results, family, layout):
    runs = results["losses"][family]
    assert _close(runs[layout], runs["single"]), (runs[layout], runs["single"])
    assert runs["single"][-1] < runs["single"][0]  # it does train


def test_tensor_parallel_srms_norm_equals_the_full_width_norm(results):
    assert results["tp_srms_norm"]["out"] < 1e-6
    assert results["tp_srms_norm"]["grad"] < 1e-6


@pytest.mark.parametrize("case", ["windows", "crossing", "on_split"])
def test_sequence_parallel_attention_equals_one_process(results, case):
    """Outputs and the gradients of q, k and v; packed documents crossing the split or starting on it."""
    assert results["sp_attention"][case] < 1e-5


def test_resume_on_the_same_layout_gives_bitwise_the_same_losses(results):
    ckpt = results["checkpoints"]
    assert ckpt["resumed"] == ckpt["trained"][3:]


@pytest.mark.parametrize("layout", ["tp", "one_process"])
def test_a_checkpoint_reloads_in_another_layout_with_the_same_logits(results, layout):
    """Saved by 2-way FSDP; loaded by 2-way tensor parallelism, and exported and loaded in one process."""
    assert results["checkpoints"]["logits"][layout] < 1e-5


def test_a_checkpoint_of_another_model_is_refused_on_every_process(results):
    refusals = results["checkpoints"]["refusals"]
    assert refusals["other_family"].startswith("CheckpointError") and "holds a transnormer model" in refusals["other_family"]
    assert refusals["other_shape"].startswith("CheckpointError") and "Size mismatch" in refusals["other_shape"]


@pytest.mark.slow
def test_four_processes_on_two_dimensional_meshes_train_like_one(corpus, tmp_path):
    """FSDP2 x TP, FSDP2 x SP and SP x TP (4 processes; slow on 2 cores; the 2-process tests cover each
    kind of parallelism alone)."""
    done = torchrun(4, str(REPO / "tests" / "training" / "parallel_worker.py"), str(corpus), str(tmp_path), limit=600)
    assert done.returncode == 0 and (tmp_path / "results.json").is_file(), done.output[-4000:]
    runs = json.loads((tmp_path / "results.json").read_text())["two_dimensional"]
    for layout in ("dp2_tp2", "dp2_sp2", "sp2_tp2"):
        assert _close(runs[layout], runs["single"]), (layout, runs[layout], runs["single"])


@pytest.mark.slow
def test_tensor_parallel_with_checkpointing_and_compile_trains_like_one(corpus, tmp_path):
    """Compiled, checkpointed tensor-parallel blocks (slow: half a minute of compiling; FSDP2 with both and
    tensor parallelism alone are in the fast tests)."""
    done = torchrun(2, str(REPO / "tests" / "training" / "parallel_worker.py"), str(corpus), str(tmp_path), "slow")
    assert done.returncode == 0 and (tmp_path / "results.json").is_file(), done.output[-4000:]
    runs = json.loads((tmp_path / "results.json").read_text())["slow"]
    assert _close(runs["tp_ac_compile"], runs["single"]), (runs["tp_ac_compile"], runs["single"])


def test_tensor_parallel_refuses_heads_it_cannot_split(results):
    assert "its 1 query heads are not divisible by 2" in results["bad_tp"]["heads"]
    assert "its 1 key/value heads are not divisible by 2" in results["bad_tp"]["kv_heads"]
