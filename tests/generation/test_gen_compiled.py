"""The compiled decode step (generation/compiled.py) against the reference: the same greedy tokens and
logits within 1e-5, the weights followed when they change, and the eager fast step with a warning
wherever it does not apply or compiling fails. Compiling takes seconds, so these tests compile few times."""

from __future__ import annotations

import functools
import re
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from tests.generation.test_gen_fast import ATOL, VARIANTS, _greedy, _prompts
from tests.helpers.models import tiny_model
from tnlm.generation import DecodeState, FastDecodeState
from tnlm.generation import compiled as compiled_module
from tnlm.generation.fast import fast_step
from tnlm.models.registry import create_model

pytestmark = pytest.mark.filterwarnings("error::UserWarning")  # a fallback warning fails the equality tests


def _compiler() -> str | None:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # no C++ compiler on this machine (or a PyTorch without this helper)
        return None


# the tests that compile need a C++ compiler; without one the fallback tests below still run
compiles = pytest.mark.skipif(_compiler() is None, reason="no C++ compiler found for PyTorch's Inductor")


@functools.lru_cache(maxsize=None)
def _odd_tnl() -> torch.nn.Module:
    preset, overrides = VARIANTS["tnl-odd"]  # LayerNorm, biases, 1+elu, LRPE in 3 of 4 layers, odd sizes
    return create_model(preset, overrides=overrides, seed=0).eval()


def _compiled(model) -> compiled_module.CompiledSteps:
    steps = fast_step(model).compiled
    assert steps is not None, "the compiled step was never asked for"
    return steps


@compiles
@torch.no_grad()
def test_compiled_step_matches_reference_left_padded() -> None:
    model = _odd_tnl()
    ids, mask = _prompts(model.config.vocab_size, (41, 23, 30), seed=3)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 10)
    started = time.time()
    state = FastDecodeState(model, compile=True)
    tokens, logits = _greedy(state, ids, mask, 10, teacher=ref_tokens)
    assert isinstance(_compiled(model)._steps.get(3), compiled_module._Compiled)  # the compiled path (batch 3)
    for ref, got in zip(ref_logits, logits):
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    own_tokens, _ = _greedy(FastDecodeState(model, compile=True), ids, mask, 10)
    assert all(torch.equal(a, b) for a, b in zip(own_tokens, ref_tokens))
    # the library with the frozen weights was removed from Inductor's cache once loaded
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    left = [p for p in Path(cache_dir()).rglob("*.wrapper.so") if p.stat().st_mtime >= started]
    assert left == []


@compiles
@torch.no_grad()
def test_compiled_step_above_the_template_batch_matches_reference() -> None:
    """From TEMPLATE_MAX_BATCH + 1 rows the step is compiled with oneDNN's products instead of Inductor's
    GEMM template (faster there): the same tokens and logits."""
    batch = compiled_module.TEMPLATE_MAX_BATCH + 2
    assert "max_autotune" in compiled_module.inductor_configs(1)
    assert "max_autotune" not in compiled_module.inductor_configs(batch)
    model = _odd_tnl()
    ids, mask = _prompts(model.config.vocab_size, (41, 23, 30, 7, 19)[:batch], seed=5)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 6)
    tokens, logits = _greedy(FastDecodeState(model, compile=True), ids, mask, 6, teacher=ref_tokens)
    assert isinstance(_compiled(model)._steps.get(batch), compiled_module._Compiled)
    for ref, got in zip(ref_logits, logits):
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@compiles
@torch.no_grad()
def test_compiled_step_follows_changed_weights(monkeypatch) -> None:
    model = create_model("tnl-tiny", seed=1).eval()
    compiles = []
    original = compiled_module.CompiledSteps._compile
    monkeypatch.setattr(compiled_module.CompiledSteps, "_compile",
                        lambda self, *a: compiles.append(1) or original(self, *a))  # fmt: skip
    ids, mask = _prompts(model.config.vocab_size, (19,), seed=5)
    tok = torch.tensor([11])

    def one_step(state):
        state.prefill(ids, mask)
        return state.step(tok)

    torch.testing.assert_close(one_step(FastDecodeState(model, compile=True)), one_step(DecodeState(model)), atol=ATOL, rtol=0)
    one_step(FastDecodeState(model, compile=True))
    assert len(compiles) == 1  # the same weights: compiled once
    # an optimizer step or a load between decode steps changes the weights in place
    model.model.layers[0].channel_mixer.l3.weight.mul_(-2.0)
    model.lm_head.weight.add_(0.01)
    torch.testing.assert_close(one_step(FastDecodeState(model, compile=True)), one_step(DecodeState(model)), atol=ATOL, rtol=0)
    assert len(compiles) == 2


@compiles
@torch.no_grad()
def test_compiled_step_is_kept_for_the_next_process(tmp_path, monkeypatch) -> None:
    """A model with the same weights, as the next process would load it, takes the kept library without
    compiling; other weights do not; a damaged file is compiled again and replaced."""
    monkeypatch.setenv("TNLM_COMPILE_CACHE", str(tmp_path))
    ids, mask = _prompts(create_model("tnl-tiny", seed=3).config.vocab_size, (17, 11), seed=4)
    tokens, first = _greedy(FastDecodeState(create_model("tnl-tiny", seed=3).eval(), compile=True), ids, mask, 3)
    kept = list(tmp_path.glob("*.pt2"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0

    compiles = []
    original = torch._inductor.aoti_compile_and_package
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda *a, **k: compiles.append(1) or original(*a, **k))  # fmt: skip
    again = create_model("tnl-tiny", seed=3).eval()
    _, second = _greedy(FastDecodeState(again, compile=True), ids, mask, 3, teacher=tokens)
    assert compiles == [] and isinstance(_compiled(again)._steps.get(2), compiled_module._Compiled)
    # the same library: the steps' logits bit for bit (the prefill's LM head takes a measured layout)
    assert all(torch.equal(a, b) for a, b in zip(first[1:], second[1:]))

    def refuse(*args, **kwargs):
        compiles.append("other")
        raise RuntimeError("refused by the test")

    other = create_model("tnl-tiny", seed=4).eval()  # other weights: another key, so it compiles (refused here)
    with monkeypatch.context() as patch, pytest.warns(UserWarning, match="batch size 2 failed"):
        patch.setattr(torch._inductor, "aoti_compile_and_package", refuse)
        _greedy(FastDecodeState(other, compile=True), ids, mask, 1)
    assert compiles == ["other"] and len(list(tmp_path.glob("*.pt2"))) == 1

    kept[0].write_bytes(b"cut short")  # a damaged file
    third = create_model("tnl-tiny", seed=3).eval()
    _, logits = _greedy(FastDecodeState(third, compile=True), ids, mask, 3, teacher=tokens)
    assert compiles == ["other", 1] and kept[0].stat().st_size > 1000
    assert all(torch.equal(a, b) for a, b in zip(first[1:], logits[1:]))


def test_cache_folder_setting(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TNLM_COMPILE_CACHE", "off")
    assert compiled_module.cache_dir() is None
    monkeypatch.setenv("TNLM_COMPILE_CACHE", "~/steps")
    assert compiled_module.cache_dir() == Path("~/steps").expanduser()
    monkeypatch.delenv("TNLM_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiled_module.cache_dir() == tmp_path / "tnlm" / "compiled-steps"


def test_cache_keeps_the_most_recently_used_within_its_limit(tmp_path) -> None:
    import os

    now = time.time()
    for i, size in enumerate([300, 300, 300]):  # a.pt2 oldest ... c.pt2 newest
        f = tmp_path / f"{'abc'[i]}.pt2"
        f.write_bytes(b"x" * size)
        os.utime(f, (now - 100 + i, now - 100 + i))
    stale, fresh = tmp_path / "d.pt2.12.tmp", tmp_path / "e.pt2.13.tmp"  # copies of interrupted processes
    for f, age in ((stale, 7200), (fresh, 10)):
        f.write_bytes(b"x")
        os.utime(f, (now - age, now - age))
    compiled_module._evict(tmp_path, 650)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.pt2", "c.pt2", "e.pt2.13.tmp"]
    compiled_module._evict(tmp_path, 100)  # a package larger than the limit on its own is not kept either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt2.13.tmp"]


def test_unwritable_cache_warns_once(tmp_path) -> None:
    model = create_model("tnl-tiny", seed=5).eval()
    steps = compiled_module.CompiledSteps(model.model, model.lm_head)
    package = tmp_path / "step.pt2"
    package.write_bytes(b"library")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="could not keep the compiled step") as record:
        steps._keep(package, blocked / "step-1.pt2")
        steps._keep(package, blocked / "step-2.pt2")
    assert len(record) == 1


def test_unsupported_models_take_the_eager_step_with_a_warning() -> None:
    model = tiny_model("transformer-tiny")
    ids, mask = _prompts(model.config.vocab_size, (12,), seed=1)
    fast_logits = _greedy(FastDecodeState(model), ids, mask, 3)[1]
    with pytest.warns(UserWarning, match="TransNormer models only.*eager fast step"):
        logits = _greedy(FastDecodeState(model, compile=True), ids, mask, 3)[1]
    for a, b in zip(fast_logits, logits):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_compile_failure_falls_back_once(monkeypatch) -> None:
    from torch._inductor import cpp_builder

    model = create_model("tnl-tiny", seed=2).eval()
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no C++ compiler found\ndetails")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "c++")  # a compiler is there, compiling fails
    ids, mask = _prompts(model.config.vocab_size, (9,), seed=2)
    ref_logits = _greedy(DecodeState(model), ids, mask, 4)[1]
    with pytest.warns(UserWarning, match=r"batch size 1 failed \(no C\+\+ compiler found\).*eager fast step"):
        logits = _greedy(FastDecodeState(model, compile=True), ids, mask, 4)[1]
    assert len(calls) == 1  # not tried again on every step
    for ref, got in zip(ref_logits, logits):
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    with warnings.catch_warnings():  # the same reason is not repeated
        warnings.simplefilter("error")
        _greedy(FastDecodeState(model, compile=True), ids, mask, 2)


def test_only_this_packages_libraries_leave_the_cache(tmp_path, monkeypatch) -> None:
    from torch._inductor.runtime import cache_dir_utils

    cache = tmp_path / "cache"
    (cache / "a1").mkdir(parents=True)
    ours, theirs = cache / "a1" / "cabc.wrapper.so", cache / "a1" / "cdef.wrapper.so"
    ours.write_bytes(b"x"), theirs.write_bytes(b"y")
    package = tmp_path / "step.pt2"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("step/data/aotinductor/model/cabc.wrapper.so", b"x")
        z.writestr("step/data/aotinductor/model/cabc.wrapper.cpp", b"")
    monkeypatch.setattr(cache_dir_utils, "cache_dir", lambda: str(cache))
    compiled_module._remove_cached_libraries(package)
    assert not ours.exists() and theirs.exists()


@compiles
def test_cli_compile_flag_gives_the_same_text() -> None:
    from typer.testing import CliRunner

    from tnlm.cli.main import app

    args = ["generate", "tnl-tiny", "-n", "8", "--prompt", "hello"]
    runs = [CliRunner().invoke(app, args + flag) for flag in ([], ["--compile"])]
    assert [r.exit_code for r in runs] == [0, 0], runs[0].output + runs[1].output
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()
    assert "compiles the model" in runs[1].stderr and "eager fast step" not in runs[1].stderr
    # the summary line counts compiling apart from decoding
    assert re.search(r"plus [0-9.]+ s compiling", runs[1].stderr) and "compiling" not in runs[0].stderr


def test_cli_says_upfront_when_compile_does_not_apply() -> None:
    from typer.testing import CliRunner

    from tnlm.cli.main import app

    result = CliRunner().invoke(app, ["generate", "transformer-tiny", "-n", "3", "--prompt", "hi", "--compile"])
    assert result.exit_code == 0, result.output
    assert "[--compile: the compiled step is made for TransNormer models only" in result.stderr
    assert "compiles the model" not in result.stderr


def test_no_compiler_is_said_before_compiling(monkeypatch) -> None:
    from torch._inductor import cpp_builder

    def missing():
        raise RuntimeError("No working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", lambda *a, **k: pytest.fail("compiled anyway"))
    model = create_model("tnl-tiny", seed=3).eval()
    assert "needs a C++ compiler" in compiled_module.model_unsupported(model)
    ids, mask = _prompts(model.config.vocab_size, (7,), seed=4)
    with pytest.warns(UserWarning, match="needs a C\\+\\+ compiler.*eager fast step"):
        _greedy(FastDecodeState(model, compile=True), ids, mask, 2)
