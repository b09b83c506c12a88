"""The panel kernel (tnlm.ops.panel_gemv) against F.linear, and how it is built and kept."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tnlm.ops import panel_gemv

pytestmark = pytest.mark.skipif(not panel_gemv.available(), reason=f"panel kernel unavailable: {panel_gemv.unavailable()}")

# odd sizes: a last panel of 1, 7 or 15 outputs, K odd (the one-row loop's tail), one output, one input
SHAPES = [(1001, 333), (17, 2), (1, 1), (15, 64), (48, 1409), (512, 7)]
ROWS = [1, 2, 3, 4, 5, 9]


def _reference(x, w, b):
    return F.linear(x.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("n", "k"), SHAPES)
@torch.no_grad()
def test_matches_linear(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + n + k)
    w, b, x = torch.randn(n, k, generator=g), torch.randn(n, generator=g), torch.randn(rows, k, generator=g)
    panels = panel_gemv.pack(w)
    assert panels.shape == (-(-n // 16), k, 16)
    for bias in (b, None):
        got = panel_gemv.linear(x, panels, n, bias)
        assert got.shape == (rows, n) and got.dtype == torch.float32
        # float32 rounding of a K-term dot product, measured against float64
        tol = 1e-5 * (k**0.5) * x.abs().max() * w.abs().max() + 1e-6
        assert (got.double() - _reference(x, w, bias)).abs().max().item() <= tol
        assert (F.linear(x, w, bias).double() - _reference(x, w, bias)).abs().max().item() <= tol  # the tolerance is float32's


@torch.no_grad()
def test_strided_input_and_thread_count_do_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 129, generator=g)
    wide = torch.randn(5, 400, generator=g)
    panels = panel_gemv.pack(w)
    rows_apart = wide[:, 10:139]  # rows 400 floats apart
    columns_apart = wide[:, ::3][:, :129]  # not contiguous within a row
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(panel_gemv.linear(rows_apart, panels, 300))
        for r in results[1:]:  # each output is computed by one thread in a fixed order
            assert torch.equal(r, results[0])
        assert torch.equal(results[0], panel_gemv.linear(rows_apart.contiguous(), panels, 300))
        assert torch.allclose(panel_gemv.linear(columns_apart, panels, 300), F.linear(columns_apart, w), atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_refuses_what_it_cannot_compute() -> None:
    w = torch.randn(20, 8)
    panels = panel_gemv.pack(w)
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="no gradient"):
        panel_gemv.linear(x.requires_grad_(), panels, 20)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"\(rows, 8\) float32"):
            panel_gemv.linear(torch.randn(2, 9), panels, 20)
        with pytest.raises(ValueError, match=r"\(rows, 8\) float32"):
            panel_gemv.linear(torch.randn(2, 8, dtype=torch.float64), panels, 20)
        with pytest.raises(ValueError, match="do not fit"):
            panel_gemv.linear(torch.randn(2, 8), panels, 33)
        with pytest.raises(ValueError, match="must come from panel_gemv.pack"):
            panel_gemv.linear(torch.randn(2, 8), w, 20)
        with pytest.raises(ValueError, match="bias must be"):
            panel_gemv.linear(torch.randn(2, 8), panels, 20, torch.randn(19))
    with pytest.raises(ValueError, match="weight matrix"):
        panel_gemv.pack(torch.randn(3))


@torch.no_grad()
def test_the_portable_loop_matches_too(tmp_path) -> None:
    """Built without -march=native (on x86-64: without AVX2, so the plain C loop rather than the
    intrinsics), the kernel gives the same products."""
    compiler = panel_gemv._compiler()
    source = panel_gemv.files("tnlm.ops").joinpath(panel_gemv.SOURCE).read_bytes()
    out = tmp_path / "plain.so"
    panel_gemv._build(compiler, ["-O2", "-fopenmp"], source, out)
    fn = panel_gemv._symbol(out)
    g = torch.Generator().manual_seed(1)
    for rows, (n, k) in [(1, (1001, 333)), (3, (17, 2)), (6, (48, 1409))]:
        w, b, x = torch.randn(n, k, generator=g), torch.randn(n, generator=g), torch.randn(rows, k, generator=g)
        panels, y = panel_gemv.pack(w), torch.empty(rows, n)
        fn(x.data_ptr(), rows, k, k, panels.data_ptr(), n, b.data_ptr(), y.data_ptr(), n, 2)
        tol = 1e-5 * (k**0.5) * x.abs().max() * w.abs().max() + 1e-6
        assert (y.double() - _reference(x, w, b)).abs().max().item() <= tol


_PROBE = """
import sys
from tnlm.ops import panel_gemv
built = []
real = panel_gemv._build
panel_gemv._build = lambda *a: (built.append(1), real(*a))
print(panel_gemv.available(), len(built), panel_gemv.unavailable())
"""


def _probe(env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split(maxsplit=2)


def test_built_once_then_loaded_from_the_cache(tmp_path, monkeypatch) -> None:
    import os

    env = {**os.environ, "TNLM_COMPILE_CACHE": str(tmp_path / "cache")}
    assert _probe(env)[:2] == ["True", "1"]  # built
    kept = list((tmp_path / "cache" / "kernels").glob("panel_gemv-*.so"))
    assert len(kept) == 1 and not list((tmp_path / "cache" / "kernels").glob(".*tmp*"))
    assert _probe(env)[:2] == ["True", "0"]  # loaded, not built
    kept[0].write_bytes(b"not a library")  # cut short, or overwritten
    assert _probe(env)[:2] == ["True", "1"]  # built again
    assert _probe({**env, "TNLM_COMPILE_CACHE": "off"})[:2] == ["True", "1"]  # no cache: built in a temporary folder
    (tmp_path / "a-file").write_text("x")
    assert _probe({**env, "TNLM_COMPILE_CACHE": str(tmp_path / "a-file")})[:2] == ["True", "1"]  # cannot be written: the same
    assert _probe({**env, "CC": "", "PATH": str(tmp_path)}) == ["False", "0", "no C compiler found (install gcc or clang, or set CC to one)\n"]
    assert _probe({**env, "CC": str(tmp_path / "cc"), "PATH": str(tmp_path)})[0] == "False"  # CC names no program
