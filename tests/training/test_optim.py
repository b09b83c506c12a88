import math

import pytest
import torch

from tnlm.models import create_model
from tnlm.training.config import ScheduleSection
from tnlm.training.flops import flops_per_token
from tnlm.training.optim import build_schedule, lr_factor

# warmup 10 steps, then decay over steps 10..109 (100 steps in all after warmup: span 99) to a 0.1 floor


@pytest.mark.parametrize(
    "decay, step, expected",
    [
        ("cosine", 0, 0.1), ("cosine", 4, 0.5), ("cosine", 9, 1.0),  # linear warmup: (s + 1) / 10
        ("cosine", 10, 1.0),
        ("cosine", 10 + 99 / 2, 0.1 + 0.9 * 0.5),  # half way: cos(pi/2) = 0
        ("cosine", 10 + 99 / 3, 0.1 + 0.9 * 0.75),  # a third of the way: (1 + cos(pi/3)) / 2 = 0.75
        ("cosine", 109, 0.1), ("cosine", 500, 0.1),  # the floor at the last step and after it
        ("linear", 10 + 99 / 4, 0.1 + 0.9 * 0.75), ("linear", 109, 0.1),
        ("constant", 3, 0.4), ("constant", 109, 1.0),
    ],
)  # fmt: skip
def test_schedule_values_at_chosen_steps(decay, step, expected):
    schedule = ScheduleSection(warmup_steps=10, decay=decay, min_lr_ratio=0.1)
    assert lr_factor(step, schedule=schedule, total_steps=110) == pytest.approx(expected, abs=1e-12)


def test_no_warmup_starts_at_the_full_rate():
    assert lr_factor(0, schedule=ScheduleSection(warmup_steps=0, decay="cosine", min_lr_ratio=0.0), total_steps=5) == 1.0


def test_schedule_scales_every_group_by_the_same_factor():
    """The optimizer group of Infini's gate keeps its own multiple of the base rate at every step."""
    model = create_model("infini-tiny", overrides={"num_hidden_layers": 1}, seed=0)
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3, weight_decay=0.1))
    gate = next(g for g in opt.param_groups if g["name"] == "self_attn.gate")
    multiplier = model.config.gate_lr_multiplier
    assert multiplier != 1.0
    sched = build_schedule(opt, ScheduleSection(warmup_steps=4, decay="linear", min_lr_ratio=0.0), total_steps=8)
    seen = []
    for _ in range(8):
        seen.append((opt.param_groups[0]["lr"], gate["lr"]))
        opt.step()
        sched.step()
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 2 / 3, 1 / 3, 0.0]  # warmup 4, then linear to 0 at step 7
    assert [a / 1e-3 for a, _ in seen] == pytest.approx(expected, abs=1e-12)
    for base, g in seen:
        assert g == pytest.approx(base * multiplier, rel=1e-12)


def test_flops_per_token_by_hand():
    """tnl-tiny at d=128, 2 layers, 4 heads of 32, SGLU 352, vocab 512 (tied head)."""
    model = create_model("tnl-tiny", overrides={"decoder_layers": 2, "linear_use_lrpe_list": [1, 0], "vocab_size": 512},
                         seed=0)
    d, glu, vocab, layers, head_dim = 128, 352, 512, 2, 32
    linear = layers * (4 * d * d + d * d + 3 * d * glu) + vocab * d
    attention = layers * 12 * d * head_dim
    assert flops_per_token(model, seq_len=1000) == 6 * linear + attention
    softmax = create_model("transformer-tiny", overrides={"num_hidden_layers": 2, "vocab_size": 512}, seed=0)
    linear = layers * (4 * d * d + 3 * d * glu) + vocab * d
    assert flops_per_token(softmax, seq_len=1000) == 6 * linear + layers * 6 * d * 1001
    assert math.isfinite(flops_per_token(create_model("infini-tiny", seed=0), seq_len=4096))
