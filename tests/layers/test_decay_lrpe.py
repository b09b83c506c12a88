import math

import pytest
import torch

from tnlm.layers.decay import alibi_slopes, transnormer_log_decay
from tnlm.layers.lrpe import Lrpe


@pytest.mark.parametrize("H", [8, 16, 32])
def test_power_of_two_slopes(H):
    expected = [2.0 ** (-8.0 * (h + 1) / H) for h in range(H)]
    assert alibi_slopes(H).tolist() == pytest.approx(expected, rel=1e-12)


def test_h8_slopes_are_halvings():
    assert alibi_slopes(8).tolist() == pytest.approx([1 / 2**i for i in range(1, 9)])


def test_non_power_of_two_slopes():
    # H = 6: the 4 slopes of c = 4 (1/4 .. 1/256), then every second slope of 8 (1/2, 1/8, ...), 2 of them
    assert alibi_slopes(6).tolist() == pytest.approx([1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8])
    # H = 12: 8 slopes of c = 8, then 16's slopes 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -(0.5 + i) for i in range(4)]
    assert alibi_slopes(12).tolist() == pytest.approx(expected)


def test_per_layer_scaling():
    H, L = 8, 24
    base = alibi_slopes(H)
    first = -transnormer_log_decay(H, 0, L).double()
    last = -transnormer_log_decay(H, L - 1, L).double()
    mid = -transnormer_log_decay(H, 12, L).double()
    assert torch.allclose(first, base * 1.00001, rtol=1e-6)
    assert torch.allclose(last, base * 1e-5, rtol=1e-5)
    assert torch.allclose(mid, base * (1 - 12 / 23 + 1e-5), rtol=1e-6)
    assert (transnormer_log_decay(H, 3, L) <= 0).all()


def test_single_layer_is_treated_as_first_layer():
    assert torch.allclose(-transnormer_log_decay(4, 0, 1).double(), alibi_slopes(4) * 1.00001, rtol=1e-6)


def test_bad_layer_index():
    with pytest.raises(ValueError, match="layer_idx"):
        transnormer_log_decay(8, 5, 5)


def test_lrpe_theta_initial_values():
    H, hd = 4, 6
    theta = Lrpe(H, hd).theta.detach()
    assert theta.shape == (H, 1, hd)
    d_tot = H * hd
    for h in range(H):
        for j in range(hd):
            assert theta[h, 0, j].item() == pytest.approx(10000 ** (-2 * (h * hd + j) / d_tot), rel=1e-6)


def test_lrpe_is_relative():
    torch.manual_seed(0)
    lrpe = Lrpe(2, 8)
    q, k = torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8)

    def score(s, t):
        return (lrpe(q, torch.tensor([s])) * lrpe(k, torch.tensor([t]))).sum(-1)

    assert torch.allclose(score(5, 2), score(105, 102), atol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)
    # and it equals sum_j q_j k_j cos(theta_j (s - t))
    theta = lrpe.theta.detach().squeeze(1)
    expected = (q[0, 0] * k[0, 0] * torch.cos(theta * 3)).sum(-1)
    assert torch.allclose(score(5, 2)[0, 0], expected, atol=1e-5)
    assert lrpe(q, torch.tensor([0])).shape == (1, 1, 2, 16)
    assert math.isfinite(lrpe(q, torch.tensor([10**6])).sum().item())


def test_lrpe_pair_equals_two_calls():
    """pair() shares the cos and sin between q and k; each result is exactly forward()'s."""
    lrpe = Lrpe(3, 10)
    with torch.no_grad():
        lrpe.theta.mul_(torch.rand(3, 1, 10) + 0.5)  # not the initial values
    q = torch.randn(2, 37, 3, 10, requires_grad=True)
    k = torch.randn(2, 37, 3, 10, requires_grad=True)
    positions = torch.arange(37).repeat(2, 1) + torch.tensor([[0], [1234]])
    got_q, got_k = lrpe.pair(q, k, positions)
    want_q, want_k = lrpe(q, positions), lrpe(k, positions)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    g = torch.randn(2, 37, 3, 20)
    grads = torch.autograd.grad((got_q * g).sum() + (got_k * g.flip(1)).sum(), (q, k, lrpe.theta))
    want = torch.autograd.grad((want_q * g).sum() + (want_k * g.flip(1)).sum(), (q, k, lrpe.theta))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # theta's sums run in another order


def test_lrpe_moves_and_casts_like_any_module():
    """Lrpe's helpers must not shadow nn.Module's own (.to, .double and .float go through _apply)."""
    lrpe = Lrpe(2, 4).double()
    assert lrpe.theta.dtype == torch.float64
    assert lrpe.float()(torch.randn(1, 3, 2, 4), torch.arange(3)).shape == (1, 3, 2, 8)
