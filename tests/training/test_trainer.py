import pytest
import torch

from tests.helpers import rel_err
from tnlm.training import train
from tnlm.training.logs import read_metrics
from tnlm.training.run import build_trainer
from tnlm.training.trainer import IGNORE_INDEX

from .conftest import tiny_config


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def test_accumulating_k_micro_batches_equals_one_batch_k_times_larger(corpus, tmp_path):
    small, _ = build_trainer(tiny_config(tmp_path / "a", corpus, "data.batch_size=2", "train.grad_accum=3"))
    large, _ = build_trainer(tiny_config(tmp_path / "b", corpus, "data.batch_size=6", "train.grad_accum=1"))
    micro, whole = small.next_micro_batches(), large.next_micro_batches()
    assert len(micro) == 3 and len(whole) == 1
    assert torch.equal(torch.cat([b["input_ids"] for b in micro]), whole[0]["input_ids"])  # the same 6 windows
    loss_small, loss_large = small.forward_backward(micro), large.forward_backward(whole)
    assert abs(loss_small - loss_large) / loss_large < 1e-6
    assert_same_gradient(grads(small.model), grads(large.model))


def assert_same_gradient(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """The whole gradient within 1e-6; each tensor within 1e-5 (LRPE's theta gradient is a small sum of
    large terms that cancel, so float32 summation order alone moves it by ~1e-6 of its norm)."""
    assert rel_err(torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])) < 1e-6
    for x, y in zip(a, b, strict=True):
        assert rel_err(x, y) < 1e-5


def test_accumulation_weighs_every_target_token_equally_under_masks(corpus, tmp_path):
    """Micro-batches with different numbers of masked labels (as SFT makes them) still give the gradient
    of the mean over all target tokens of the step."""
    trainer, _ = build_trainer(tiny_config(tmp_path / "a", corpus))
    g = torch.Generator().manual_seed(0)
    micro = []
    for keep in (0.9, 0.2, 0.5):
        ids = torch.randint(3, 500, (2, 33), generator=g)
        labels = torch.randint(3, 500, (2, 33), generator=g)
        labels[torch.rand(2, 33, generator=g) > keep] = IGNORE_INDEX
        micro.append({"input_ids": ids, "labels": labels})
    loss_micro = trainer.forward_backward(micro)
    g_micro = grads(trainer.model)
    trainer.optimizer.zero_grad(set_to_none=True)
    joined = {k: torch.cat([b[k] for b in micro]) for k in ("input_ids", "labels")}
    loss_joined = trainer.forward_backward([joined])
    assert abs(loss_micro - loss_joined) / loss_joined < 1e-6
    assert_same_gradient(g_micro, grads(trainer.model))


def test_validation_leaves_the_training_state_unchanged(corpus, tmp_path):
    plain, _ = build_trainer(tiny_config(tmp_path / "a", corpus))
    checked, _ = build_trainer(tiny_config(tmp_path / "b", corpus))
    plain_losses, checked_losses, val = [], [], []
    for _ in range(4):
        plain_losses.append(plain.train_step()["loss"])
        rng_before = torch.get_rng_state()
        val.append(checked.validate(batches=2))
        assert torch.equal(torch.get_rng_state(), rng_before) and checked.model.training
        checked_losses.append(checked.train_step()["loss"])
    assert checked_losses == plain_losses  # bitwise
    assert checked.train_loader.state_dict() == plain.train_loader.state_dict()
    for a, b in zip(plain.model.parameters(), checked.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert checked.validate(batches=2) == checked.validate(batches=2)  # the same batches every time
    assert val[-1] < val[0]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("tnl-tiny", "{decoder_layers: 2, linear_use_lrpe_list: [1, 0]}"),
        ("transformer-tiny", "{num_hidden_layers: 2}"),
        ("infini-tiny", "{num_hidden_layers: 2}"),  # 64-token segments: two per sequence
    ],
)
def test_loss_falls_on_real_text_for_every_family(corpus, tmp_path, name, overrides):
    cfg = tiny_config(tmp_path / name, corpus, f"model.name={name}", f"model.overrides={overrides}",
                      "data.seq_len=128", "data.batch_size=2", "train.steps=40", "schedule.warmup_steps=5",
                      "checkpoint.every=100")  # fmt: skip
    result = train(cfg)
    losses = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 40
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert first > 5.8  # about ln(512) = 6.24 at random initialisation
    assert last < first - 1.0, (name, first, last)
    assert result.val_loss < first - 1.0


def test_packed_documents_train_a_transnormer(corpus, tmp_path):
    trainer, _ = build_trainer(tiny_config(tmp_path / "v", corpus, "data.mode=varlen"))
    batch = trainer.next_micro_batches()[0]
    assert batch["input_ids"].shape[0] == 1 and batch["cu_seqlens"].numel() >= 2
    losses = [trainer.train_step()["loss"] for _ in range(8)]
    assert losses[-1] < losses[0]


def test_activation_checkpointing_and_compile_change_nothing_but_speed(corpus, tmp_path):
    plain, _ = build_trainer(tiny_config(tmp_path / "a", corpus))
    checkpointed, _ = build_trainer(tiny_config(tmp_path / "b", corpus, "train.activation_checkpointing=true"))
    batches = plain.next_micro_batches()
    plain.forward_backward(batches)
    checkpointed.forward_backward(batches)
    for a, b in zip(grads(plain.model), grads(checkpointed.model), strict=True):
        assert torch.equal(a, b)  # the same operations, recomputed
    assert set(dict(checkpointed.model.named_parameters())) == set(dict(plain.model.named_parameters()))
    both, _ = build_trainer(tiny_config(tmp_path / "c", corpus, "train.activation_checkpointing=true", "train.compile=true"))
    reference, _ = build_trainer(tiny_config(tmp_path / "d", corpus))
    compiled_losses = [both.train_step()["loss"] for _ in range(3)]
    losses = [reference.train_step()["loss"] for _ in range(3)]
    assert compiled_losses == pytest.approx(losses, rel=1e-5)
