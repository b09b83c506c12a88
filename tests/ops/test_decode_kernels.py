"""The decode step's C kernels (tnlm.ops.decode_kernels) against their references, and how they are built and kept."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tnlm.ops import decode_kernels

pytestmark = pytest.mark.skipif(not decode_kernels.available(), reason=f"decode kernels unavailable: {decode_kernels.unavailable()}")

# odd sizes: a last panel of 1, 7 or 15 outputs, K odd (the one-row loop's tail), one output, one input
SHAPES = [(1001, 333), (17, 2), (1, 1), (15, 64), (48, 1409), (512, 7)]
ROWS = [1, 2, 3, 4, 5, 8, 9, 13, 17]


def _reference(x, w, b):
    return F.linear(x.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize(("n", "k"), SHAPES)
@torch.no_grad()
def test_matches_linear(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 1000 + n + k)
    w, b, x = torch.randn(n, k, generator=g), torch.randn(n, generator=g), torch.randn(rows, k, generator=g)
    panels = decode_kernels.pack(w)
    assert panels.shape == (-(-n // 16), k, 16)
    for bias in (b, None):
        got = decode_kernels.linear(x, panels, n, bias)
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
    panels = decode_kernels.pack(w)
    rows_apart = wide[:, 10:139]  # rows 400 floats apart
    columns_apart = wide[:, ::3][:, :129]  # not contiguous within a row
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(decode_kernels.linear(rows_apart, panels, 300))
        for r in results[1:]:  # each output is computed by one thread in a fixed order
            assert torch.equal(r, results[0])
        assert torch.equal(results[0], decode_kernels.linear(rows_apart.contiguous(), panels, 300))
        assert torch.allclose(decode_kernels.linear(columns_apart, panels, 300), F.linear(columns_apart, w), atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_refuses_what_it_cannot_compute() -> None:
    w = torch.randn(20, 8)
    panels = decode_kernels.pack(w)
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="no gradient"):
        decode_kernels.linear(x.requires_grad_(), panels, 20)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"\(rows, 8\) float32"):
            decode_kernels.linear(torch.randn(2, 9), panels, 20)
        with pytest.raises(ValueError, match=r"\(rows, 8\) float32"):
            decode_kernels.linear(torch.randn(2, 8, dtype=torch.float64), panels, 20)
        with pytest.raises(ValueError, match="do not fit"):
            decode_kernels.linear(torch.randn(2, 8), panels, 33)
        with pytest.raises(ValueError, match="must come from decode_kernels.pack"):
            decode_kernels.linear(torch.randn(2, 8), w, 20)
        with pytest.raises(ValueError, match="bias must be"):
            decode_kernels.linear(torch.randn(2, 8), panels, 20, torch.randn(19))
    with pytest.raises(ValueError, match="weight matrix"):
        decode_kernels.pack(torch.randn(3))


_CPU_FLAGS = set(decode_kernels._cpu_features().split())
_X86 = platform.machine() in ("x86_64", "AMD64")


def _builds() -> list[list[str]]:
    """Flag sets for each code path, whatever this machine takes by default: the plain C loop (no
    -march=native: on x86-64 without AVX2), AVX2 alone, and AVX-512 (built everywhere on x86-64, run
    where the CPU has it)."""
    builds = [["-O2"]]
    if _X86:
        builds += [["-O2", "-mavx2", "-mfma"], ["-O2", "-mavx2", "-mfma", "-mavx512f"]]
    return builds


@pytest.mark.parametrize("flags", _builds(), ids=lambda f: " ".join(f))
@torch.no_grad()
def test_the_other_code_paths_match_too(flags: list[str], tmp_path) -> None:
    """Built for another CPU than this one, the kernels give the same products, state and layer."""
    compiler = decode_kernels._compiler()
    source = decode_kernels.files("tnlm.ops").joinpath(decode_kernels.SOURCE).read_bytes()
    out = tmp_path / "other.so"
    try:
        decode_kernels._build(compiler, [*flags, "-fopenmp"], source, out)
    except Exception:  # a compiler without OpenMP: the single-threaded build the library falls back to
        decode_kernels._build(compiler, flags, source, out)
    needs = {"-mavx2": "avx2", "-mfma": "fma", "-mavx512f": "avx512f"}
    missing = {needs[f] for f in flags if f in needs} - _CPU_FLAGS
    if missing:
        pytest.skip(f"built; this CPU cannot run it (no {', '.join(sorted(missing))})")
    kernels = decode_kernels._symbol(out)
    g = torch.Generator().manual_seed(1)
    for rows, (n, k) in [(1, (1001, 333)), (3, (17, 2)), (6, (48, 1409)), (9, (40, 17))]:
        w, b, x = torch.randn(n, k, generator=g), torch.randn(n, generator=g), torch.randn(rows, k, generator=g)
        panels, y = decode_kernels.pack(w), torch.empty(rows, n)
        kernels.panel_gemv(x.data_ptr(), rows, k, k, panels.data_ptr(), n, b.data_ptr(), y.data_ptr(), n, 2)
        tol = 1e-5 * (k**0.5) * x.abs().max() * w.abs().max() + 1e-6
        assert (y.double() - _reference(x, w, b)).abs().max().item() <= tol
    for B, H, Dk, Dv in [(1, 8, 128, 64), (3, 5, 7, 300)]:
        state, lam, q, k, v = _decay_inputs(B, H, Dk, Dv, seed=B)
        expected_state = state.clone()
        expected = decode_kernels.decay_step_reference(expected_state, lam, q, k, v)
        o = torch.empty(B, H * Dv)
        kernels.decay_step(state.data_ptr(), B * H, H, Dk, Dv, lam.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                           o.data_ptr(), 2)  # fmt: skip
        assert torch.allclose(state, expected_state, rtol=1e-6, atol=1e-6)
        assert torch.allclose(o, expected, rtol=1e-5, atol=1e-4)
    p = _layer_inputs(37, 3, 5, 23, lrpe=True, bias=True, rms=True, seed=4)
    layer = _layer(p, "silu", "gelu")
    layer._fn = kernels.transnormer_layer  # the same layer through the plain build
    state, positions, x = torch.zeros(6, 3, 10, 5), torch.arange(6) * 999, torch.randn(6, 37, generator=g)
    expected, expected_state = _layer_reference(p, x, positions, state.clone(), "silu", "gelu")
    layer(x, positions, state)
    assert (x - expected).abs().max().item() <= 1e-5 * max(expected.abs().max().item(), 1.0)
    assert torch.allclose(state, expected_state, rtol=1e-5, atol=1e-5)


def _decay_inputs(B: int, H: int, Dk: int, Dv: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(B, H, Dk, Dv, generator=g)
    lam_m1 = torch.expm1(-torch.rand(H, generator=g) * 0.5)  # lambda in (0.6, 1]: lambda - 1 in (-0.4, 0]
    q, k, v = torch.randn(B, H, Dk, generator=g), torch.randn(B, H, Dk, generator=g), torch.randn(B, H, Dv, generator=g)
    return state, lam_m1, q, k, v


# odd sizes: one head, one key dimension, a value width past the kernel's 256-column block, an odd batch
@pytest.mark.parametrize(("B", "H", "Dk", "Dv"), [(1, 8, 128, 64), (3, 5, 7, 300), (2, 1, 1, 1), (5, 3, 33, 257)])
@torch.no_grad()
def test_decay_step_matches_the_reference_over_steps(B: int, H: int, Dk: int, Dv: int) -> None:
    state, lam, *_ = _decay_inputs(B, H, Dk, Dv, seed=B * H + Dk)
    ref_state = state.clone()
    g = torch.Generator().manual_seed(7)
    for step in range(5):  # the state carries over: errors would compound
        q, k, v = torch.randn(B, H, Dk, generator=g), torch.randn(B, H, Dk, generator=g), torch.randn(B, H, Dv, generator=g)
        expected = decode_kernels.decay_step_reference(ref_state, lam, q, k, v)
        got = decode_kernels.decay_step(state, lam, q, k, v)
        assert got.shape == (B, H * Dv)
        assert torch.allclose(state, ref_state, rtol=1e-6, atol=1e-5), step
        scale = (q.abs().max() * state.abs().max() * Dk).item()
        assert (got - expected).abs().max().item() <= 1e-6 * scale + 1e-5, step


@torch.no_grad()
def test_decay_step_takes_strided_inputs_and_any_thread_count() -> None:
    state, lam, q, k, v = _decay_inputs(4, 6, 20, 24, seed=3)
    qk = torch.stack([q, k], dim=1)  # (B, 2, H, Dk): q and k as views, as the fast step splits them
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            s = state.clone()
            outs.append((decode_kernels.decay_step(s, lam.view(1, -1, 1, 1), qk[:, 0], qk[:, 1], v), s))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
        ref = state.clone()
        assert torch.allclose(outs[0][0], decode_kernels.decay_step_reference(ref, lam, q, k, v), atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_decay_step_refuses_what_it_cannot_compute() -> None:
    state, lam, q, k, v = _decay_inputs(2, 3, 4, 5, seed=0)
    with pytest.raises(ValueError, match="shapes do not match"):
        decode_kernels.decay_step(state, lam, q, k, v[:, :, :4])
    with pytest.raises(ValueError, match="contiguous state"):
        decode_kernels.decay_step(state.transpose(2, 3), lam, q, k, v)
    with pytest.raises(ValueError, match="float32"):
        decode_kernels.decay_step(state.double(), lam, q, k, v)
    with pytest.raises(RuntimeError, match="no gradient"):
        decode_kernels.decay_step(state, lam, q.requires_grad_(), k, v)


_PROBE = """
import sys
from tnlm.ops import decode_kernels
built = []
real = decode_kernels._build
decode_kernels._build = lambda *a: (built.append(1), real(*a))
print(decode_kernels.available(), len(built), decode_kernels.unavailable())
"""


def _probe(env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split(maxsplit=2)


def test_built_once_then_loaded_from_the_cache(tmp_path, monkeypatch) -> None:
    import os

    env = {**os.environ, "TNLM_COMPILE_CACHE": str(tmp_path / "cache")}
    assert _probe(env)[:2] == ["True", "1"]  # built
    kept = list((tmp_path / "cache" / "kernels").glob("decode_kernels-*.so"))
    assert len(kept) == 1 and not list((tmp_path / "cache" / "kernels").glob(".*tmp*"))
    assert _probe(env)[:2] == ["True", "0"]  # loaded, not built
    kept[0].write_bytes(b"not a library")  # cut short, or overwritten
    assert _probe(env)[:2] == ["True", "1"]  # built again
    assert _probe({**env, "TNLM_COMPILE_CACHE": "off"})[:2] == ["True", "1"]  # no cache: built in a temporary folder
    (tmp_path / "a-file").write_text("x")
    assert _probe({**env, "TNLM_COMPILE_CACHE": str(tmp_path / "a-file")})[:2] == ["True", "1"]  # cannot be written: the same
    assert _probe({**env, "CC": "", "PATH": str(tmp_path)}) == ["False", "0", "no C compiler found (install gcc or clang, or set CC to one)\n"]
    assert _probe({**env, "CC": str(tmp_path / "cc"), "PATH": str(tmp_path)})[0] == "False"  # CC names no program


def test_only_the_libraries_used_last_are_kept(tmp_path) -> None:
    """Libraries built from earlier sources, other compilers or CPUs pile up in a shared cache: building one
    removes all but the KEEP_LIBRARIES used last; loading one marks it used."""
    import os

    folder = tmp_path / "cache" / "kernels"
    folder.mkdir(parents=True)
    old = [folder / f"decode_kernels-old{i:02d}.so" for i in range(12)]
    for i, path in enumerate(old):
        path.write_bytes(b"an earlier build")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # old00 used first, old11 last
    (folder / "notes.txt").write_text("not ours")
    env = {**os.environ, "TNLM_COMPILE_CACHE": str(tmp_path / "cache")}
    assert _probe(env)[:2] == ["True", "1"]  # built
    left = sorted(p.name for p in folder.glob("decode_kernels-*.so"))
    assert len(left) == decode_kernels.KEEP_LIBRARIES
    assert [p.name for p in old[-(decode_kernels.KEEP_LIBRARIES - 1):]] == [n for n in left if "old" in n]
    assert (folder / "notes.txt").exists()
    built = next(folder / n for n in left if "old" not in n)
    os.utime(built, (1_000_000, 1_000_000))  # as if used long ago
    assert _probe(env)[:2] == ["True", "0"]  # loaded, not built
    assert built.stat().st_mtime > 2_000_000  # and marked used


def test_a_cache_it_cannot_load_from_falls_back_to_a_temporary_build(tmp_path, monkeypatch) -> None:
    """A cache folder whose files cannot be loaded (mounted noexec, say) or a library without the
    kernels: built and loaded from a temporary folder, or reported unavailable; never an exception."""
    monkeypatch.setenv("TNLM_COMPILE_CACHE", str(tmp_path / "cache"))
    real = decode_kernels._symbol
    loaded = []

    def refuse_the_cache(path):
        if str(path).startswith(str(tmp_path)):
            raise OSError("failed to map segment from shared object")
        loaded.append(path)
        return real(path)

    monkeypatch.setattr(decode_kernels, "_symbol", refuse_the_cache)
    decode_kernels._library.cache_clear()
    try:
        assert decode_kernels.available() and len(loaded) == 1
        monkeypatch.setattr(decode_kernels, "_symbol", lambda path: (_ for _ in ()).throw(AttributeError("no tnlm_decay_step")))
        decode_kernels._library.cache_clear()
        assert not decode_kernels.available() and "no tnlm_decay_step" in decode_kernels.unavailable()
    finally:
        monkeypatch.undo()
        decode_kernels._library.cache_clear()
    assert decode_kernels.available()


# --- the whole TransNormer layer in one call (TransnormerLayer) ---------------------------------------------

_ACTS = {"none": lambda x: x, "silu": F.silu, "relu": F.relu, "sigmoid": torch.sigmoid, "gelu": F.gelu, "elu": F.elu,
         "1+elu": lambda x: 1 + F.elu(x), "exp": torch.exp}  # fmt: skip


def _rms(x, weight, eps):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def _layer_inputs(d: int, heads: int, hd: int, glu: int, *, lrpe: bool, bias: bool, rms: bool, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    hidden = heads * hd

    def lin(n, k):
        return torch.randn(n, k, generator=g) / k**0.5, (torch.randn(n, generator=g) * 0.1 if bias else None)

    def norm(n):
        return (1 + 0.1 * torch.randn(n, generator=g)) if rms else None, 1e-6 if rms else 1e-5

    return dict(qkvu=lin(4 * hidden, d), out=lin(d, hidden), l12=lin(2 * glu, d), l3=lin(d, glu),
                token_norm=norm(d), mixer_norm=norm(hidden), channel_norm=norm(d),
                theta=10000.0 ** (-torch.arange(hidden) / hidden) if lrpe else None,
                lam_m1=torch.expm1(-torch.rand(heads, generator=g) * 0.5), heads=heads)  # fmt: skip


def _layer_reference(p: dict, x, positions, state, qk_act: str, glu_act: str):
    """The fast step's PyTorch arithmetic (generation/fast.py): x (B, d) and state updated, returned."""
    B, H = x.shape[0], p["heads"]
    hidden = p["out"][0].shape[1]
    qkvu = F.linear(_rms(x, *p["token_norm"]), *p["qkvu"])
    q, k, v, u = qkvu.split(hidden, -1)
    q, k = _ACTS[qk_act](q).view(B, H, -1), _ACTS[qk_act](k).view(B, H, -1)
    if p["theta"] is not None:
        angle = positions.view(B, 1, 1).float() * p["theta"].view(H, -1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        q, k = torch.cat([q * cos, q * sin], -1), torch.cat([k * cos, k * sin], -1)
    o = decode_kernels.decay_step_reference(state, p["lam_m1"], q, k, v.reshape(B, H, -1))
    x = x + F.linear(u * _rms(o, *p["mixer_norm"]), *p["out"])
    gate, value = F.linear(_rms(x, *p["channel_norm"]), *p["l12"]).chunk(2, -1)
    return x + F.linear(_ACTS[glu_act](gate) * value, *p["l3"]), state


def _layer(p: dict, qk_act: str, glu_act: str) -> decode_kernels.TransnormerLayer:
    product = lambda wb: decode_kernels.Product(decode_kernels.pack(wb[0]), wb[1], wb[0].shape[0])  # noqa: E731
    return decode_kernels.TransnormerLayer(
        heads=p["heads"], qkvu=product(p["qkvu"]), out=product(p["out"]), l12=product(p["l12"]), l3=product(p["l3"]),
        token_norm=decode_kernels.Norm(*p["token_norm"]), mixer_norm=decode_kernels.Norm(*p["mixer_norm"]),
        channel_norm=decode_kernels.Norm(*p["channel_norm"]), theta=p["theta"], lam_m1=p["lam_m1"],
        qk_act=qk_act, glu_act=glu_act)  # fmt: skip


# odd sizes (d, heads, head_dim, glu), every feature map, LRPE or not, biases, RMSNorm weights or SRMSNorm, and
# batches across the products' one-, four- and eight-row kernels
LAYER_CASES = [
    (37, 3, 5, 23, "silu", "none", True, False, False, 1),
    (37, 3, 5, 23, "relu", "silu", False, True, True, 3),
    (64, 4, 16, 41, "sigmoid", "gelu", True, True, True, 9),
    (20, 1, 7, 5, "gelu", "relu", True, False, True, 6),
    (33, 5, 3, 17, "elu", "sigmoid", False, False, False, 2),
    (48, 2, 24, 31, "1+elu", "exp", True, True, False, 17),
    (16, 2, 8, 16, "exp", "elu", False, True, True, 1),
    (24, 3, 8, 9, "none", "1+elu", True, False, False, 4),
]


@pytest.mark.parametrize(("d", "heads", "hd", "glu", "qk_act", "glu_act", "lrpe", "bias", "rms", "B"), LAYER_CASES)
@torch.no_grad()
def test_transnormer_layer_matches_the_operators_over_steps(d, heads, hd, glu, qk_act, glu_act, lrpe, bias, rms, B) -> None:
    p = _layer_inputs(d, heads, hd, glu, lrpe=lrpe, bias=bias, rms=rms, seed=d + B)
    layer = _layer(p, qk_act, glu_act)
    dk = hd * (2 if lrpe else 1)
    g = torch.Generator().manual_seed(B)
    state = torch.randn(B, heads, dk, hd, generator=g) * 0.1
    ref_state = state.clone()
    positions = torch.randint(0, 40000, (B,), generator=g)  # LRPE's angles far from zero
    for step in range(4):  # the state carries over: errors would compound
        x = torch.randn(B, d, generator=g)
        expected, ref_state = _layer_reference(p, x, positions, ref_state, qk_act, glu_act)
        got = x.clone()
        layer(got, positions, state)
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() <= 1e-5 * max(scale, 1.0), f"step {step}"
        assert torch.allclose(state, ref_state, rtol=1e-5, atol=1e-5)
        positions = positions + 1


@pytest.mark.parametrize(("qk_act", "glu_act"), [("silu", "sigmoid"), ("sigmoid", "silu")])
@torch.no_grad()
def test_transnormer_layer_far_out_of_the_exp_range(qk_act: str, glu_act: str) -> None:
    """Feature-map and gate inputs in the hundreds (and one of -1e37): the vectorised exp's clamped range
    and the branches below -87 give what PyTorch's silu and sigmoid give."""
    p = _layer_inputs(32, 2, 8, 24, lrpe=True, bias=True, rms=False, seed=5)
    p["qkvu"] = (p["qkvu"][0] * 300, p["qkvu"][1])
    p["l12"] = (p["l12"][0] * 300, p["l12"][1])
    p["qkvu"][1][0] = -1e37  # one query input far below the range, through the bias
    layer = _layer(p, qk_act, glu_act)
    g = torch.Generator().manual_seed(2)
    state, positions = torch.zeros(3, 2, 16, 8), torch.tensor([5, 700, 33000])
    ref_state = state.clone()
    for step in range(2):
        x = torch.randn(3, 32, generator=g)
        expected, ref_state = _layer_reference(p, x, positions, ref_state, qk_act, glu_act)
        assert torch.isfinite(expected).all()
        got = x.clone()
        layer(got, positions, state)
        assert (got - expected).abs().max().item() <= 1e-5 * max(expected.abs().max().item(), 1.0), f"step {step}"
        assert torch.allclose(state, ref_state, rtol=1e-5, atol=1e-5 * ref_state.abs().max().item())


@torch.no_grad()
def test_transnormer_layer_result_does_not_depend_on_the_thread_counts() -> None:
    p = _layer_inputs(40, 4, 10, 30, lrpe=True, bias=True, rms=True, seed=3)
    layer = _layer(p, "silu", "none")
    x0, positions = torch.randn(5, 40), torch.arange(5) * 1000
    results = []
    for threads, state_threads in [(1, 1), (2, 1), (3, 2)]:
        x, state = x0.clone(), torch.ones(5, 4, 20, 10)
        layer(x, positions, state, threads=threads, state_threads=state_threads)
        results.append((x, state))
    for x, state in results[1:]:
        assert torch.equal(x, results[0][0]) and torch.equal(state, results[0][1])


@torch.no_grad()
def test_transnormer_layer_refuses_what_it_cannot_compute() -> None:
    p = _layer_inputs(16, 2, 4, 12, lrpe=False, bias=False, rms=False, seed=0)
    with pytest.raises(ValueError, match="activation 'tanh' is not one the kernel computes"):
        _layer(p, "tanh", "none")
    layer = _layer(p, "silu", "none")
    state, positions = torch.zeros(2, 2, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must be a contiguous \(rows, 16\) float32"):
        layer(torch.randn(2, 15), positions, state)
    with pytest.raises(ValueError, match=r"x must be"):
        layer(torch.randn(2, 16, dtype=torch.float64), positions, state)
    with pytest.raises(ValueError, match=r"state must be a contiguous float32 \(2, 2, 4, 4\)"):
        layer(torch.randn(2, 16), positions, torch.zeros(2, 2, 8, 4))
    with pytest.raises(ValueError, match="positions must be a contiguous int64"):
        layer(torch.randn(2, 16), positions.int(), state)
    with pytest.raises(RuntimeError, match="no gradient"):
        with torch.enable_grad():
            layer(torch.randn(2, 16, requires_grad=True), positions, state)
    narrow = decode_kernels.Product(decode_kernels.pack(p["out"][0])[..., :8].contiguous(), None, 16)
    with pytest.raises(ValueError, match=r"out: expected pack\(\) panels"):  # panels 8 wide, not 16
        decode_kernels.TransnormerLayer(heads=2, qkvu=layer.keep[0], out=narrow, l12=layer.keep[2], l3=layer.keep[3],
                                        token_norm=decode_kernels.Norm(None, 1e-6), mixer_norm=decode_kernels.Norm(None, 1e-6),
                                        channel_norm=decode_kernels.Norm(None, 1e-6), theta=None, lam_m1=p["lam_m1"],
                                        qk_act="silu", glu_act="none")  # fmt: skip
    wrong = dict(p, l3=(torch.randn(16, 13), None))  # l3 reads 13 inputs, SGLU makes 12
    with pytest.raises(ValueError, match=r"l12: expected pack\(\) panels of a \(26, 16\) weight, got 24 outputs"):
        _layer(wrong, "silu", "none")
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        _layer(dict(p, heads=3, lam_m1=torch.zeros(3)), "silu", "none")
