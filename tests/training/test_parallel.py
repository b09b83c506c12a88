"""The parts of distributed training that need no second process: layouts and their refusals, the
fused-projection form checkpoints use, sequence-parallel batch slices, the loader position across
layouts, and the single-process checkpoint through torch.distributed.checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.training.conftest import tiny_config
from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.registry import create_model
from tnlm.training import load_train_config, train
from tnlm.training.checkpoint import CheckpointManager, export_checkpoint, find_checkpoint
from tnlm.training.config import ParallelSection
from tnlm.training.parallel import Layout, resolve_layout, split_batch
from tnlm.training.parallel.fused import FusedLinear, canonical_views, fused_shapes
from tnlm.training.parallel.sequence import _local_cu_seqlens
from tnlm.training.parallel.state import local_loader_state, portable_loader_state
from tnlm.training.parallel.tensor import check_tensor_parallel
from tnlm.training.parallelize import check_parallel_support


@pytest.mark.parametrize("sizes, world, expected", [
    ({}, 1, Layout(1, 1, 1)), ({}, 4, Layout(4, 1, 1)), ({"tp": 2}, 4, Layout(2, 1, 2)),
    ({"sp": 2, "tp": 2}, 8, Layout(2, 2, 2)), ({"dp_shard": 2, "tp": 2}, 4, Layout(2, 1, 2)),
])  # fmt: skip
def test_layouts_fill_the_processes(sizes, world, expected):
    assert resolve_layout(ParallelSection(**sizes), world) == expected


@pytest.mark.parametrize("sizes, world, match", [
    ({"dp_shard": 3}, 2, r"dp_shard \* sp \* tp = 3 \* 1 \* 1 = 3, but this run has 2 process"),
    ({"tp": 4}, 2, "parallel.sp \\* parallel.tp = 4 does not divide the 2 process"),
    ({"dp_shard": 2}, 1, "but this run has 1 process.*torchrun --nproc_per_node N"),
])  # fmt: skip
def test_layouts_that_do_not_fit_the_processes_are_refused(sizes, world, match):
    with pytest.raises(ConfigError, match=match):
        resolve_layout(ParallelSection(**sizes), world)


@pytest.mark.parametrize("override, match", [
    ("parallel.tp=0", "parallel.tp must be at least 1"), ("parallel.sp=-1", "parallel.sp must be at least 1"),
    ("parallel.dp_shard=-2", "parallel.dp_shard must be at least 1, or -1"),
    ("parallel.dp_shard=3", r"data.batch_size \(8\) .* divisible by parallel.dp_shard \(3\)"),
])  # fmt: skip
def test_bad_parallel_settings_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_train_config(None, ["data.path=x", override])


@pytest.mark.parametrize("name, overrides, match", [
    ("tnl-tiny", {"decoder_attention_heads": 1}, "its 1 query heads are not divisible by 2"),
    ("tnl-tiny", {"glu_dim": 351}, r"its 351 SGLU width \(glu_dim\) are not divisible by 2"),
    ("tnl-tiny", {"norm_type": "layernorm"}, "needs norm_type simplermsnorm"),
    ("transformer-tiny", {"num_key_value_heads": 1}, "its 1 key/value heads are not divisible by 2"),
    ("infini-tiny", {"num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 33},
     r"its 33 MLP width \(intermediate_size\) are not divisible by 2"),
])  # fmt: skip
def test_tensor_parallelism_refuses_models_it_cannot_split(name, overrides, match):
    config = create_model(name, overrides=overrides).config
    with pytest.raises(ConfigError, match=match):
        check_tensor_parallel(config, 2)
    check_tensor_parallel(config, 1)


class _World:
    """The sizes check_parallel_support reads, without processes."""

    def __init__(self, **sizes: int) -> None:
        self.sizes = sizes

    def size(self, dim: str) -> int:
        return self.sizes.get(dim, 1)


def test_sequence_parallelism_needs_linear_attention_and_no_compile(tmp_path):
    base = ["data.path=x"]
    with pytest.raises(ConfigError, match="tnlm_transformer models do not have"):
        check_parallel_support(create_model("transformer-tiny"), _World(sp=2), load_train_config(None, base))
    with pytest.raises(ConfigError, match="does not combine with train.compile"):
        check_parallel_support(create_model("tnl-tiny"), _World(sp=2),
                               load_train_config(None, [*base, "train.compile=true"]))  # fmt: skip
    check_parallel_support(create_model("tnl-tiny"), _World(sp=2),
                           load_train_config(None, [*base, "train.activation_checkpointing=true"]))  # fmt: skip


def test_a_fused_linear_computes_what_the_linear_did_and_checkpoints_see_its_parts():
    linear = nn.Linear(6, 4 * 5, bias=True)
    x = torch.randn(3, 7, 6)
    fused = FusedLinear.fold(linear, 4)
    assert fused.weight.shape == (4, 5, 6) and fused.bias.shape == (4, 5)
    assert torch.equal(fused(x), linear(x))
    model = create_model("tnl-tiny", overrides={"decoder_layers": 2, "linear_use_lrpe_list": [1, 0], "bias": True})
    fused_names = fused_shapes(model)
    assert fused_names == {f"model.layers.{i}.token_mixer.qkvu_proj.{p}": 4 for i in (0, 1) for p in ("weight", "bias")}
    views = canonical_views(model.state_dict(), fused_names)
    weight = model.model.layers[0].token_mixer.qkvu_proj.weight
    view = views["model.layers.0.token_mixer.qkvu_proj.weight"]
    assert view.shape == (4, 128, 128) and view.data_ptr() == weight.data_ptr()  # a view: loading into it loads the model
    assert torch.equal(view[2], weight[256:384])  # the third part is v


def test_sequence_parallel_slices_carry_absolute_positions_and_local_documents():
    batch = {"input_ids": torch.arange(10)[None], "labels": torch.arange(1, 11)[None],
             "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 0, 1]]),
             "cu_seqlens": torch.tensor([0, 3, 8, 10], dtype=torch.int32), "max_seqlen": 5}  # fmt: skip
    first, second = (split_batch(batch, rank=r, size=2) for r in (0, 1))
    assert first["input_ids"].tolist() == [[0, 1, 2, 3, 4]] and second["labels"].tolist() == [[6, 7, 8, 9, 10]]
    assert second["position_ids"].tolist() == [[2, 3, 4, 0, 1]]  # LRPE sees where the tokens really are
    assert first["cu_seqlens"].tolist() == [0, 0, 3, 5]  # starts a document: a leading empty sequence
    assert second["cu_seqlens"].tolist() == [0, 3, 5]  # continues the document of the first slice
    windows = split_batch({"input_ids": torch.zeros(2, 7, dtype=torch.long), "labels": torch.zeros(2, 7)}, rank=1, size=2)
    assert windows["position_ids"].tolist() == [[3, 4, 5, 6]] and "cu_seqlens" not in windows
    assert _local_cu_seqlens(torch.tensor([0, 4, 9]), start=4, end=9).tolist() == [0, 0, 5]
    with pytest.raises(Exception, match="at least 4 tokens"):
        split_batch({"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.zeros(1, 3)}, rank=0, size=4)


def test_the_loader_position_moves_between_data_parallel_layouts():
    config = {"seq_len": 64, "batch_size": 2, "mode": "windows", "rank": 1, "world_size": 2, "seed": 0, "shuffle": True}
    portable = portable_loader_state({"epoch": 1, "batch": 7, "config": config})
    assert portable["config"]["global_batch_size"] == 4 and "rank" not in portable["config"]
    single = {"epoch": 0, "batch": 0, "config": {**config, "rank": 0, "world_size": 1, "batch_size": 4}}
    assert local_loader_state(portable, single) == {"epoch": 1, "batch": 7, "config": single["config"]}
    other = {"epoch": 0, "batch": 0, "config": {**config, "rank": 0, "world_size": 1, "batch_size": 8}}
    assert local_loader_state(portable, other)["config"]["batch_size"] == 4  # the loader then refuses it


def test_one_process_checkpoints_export_to_the_model_the_run_wrote(corpus, tmp_path):
    result = train(tiny_config(tmp_path / "run", corpus, "train.steps=2", "checkpoint.every=1"))
    exported = export_checkpoint(find_checkpoint(tmp_path / "run"), tmp_path / "exported")
    trained = create_model(result.model_dir)
    again = create_model(exported)
    for (name, a), (_, b) in zip(trained.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert (exported / "tokenizer.json").is_file()
    meta = CheckpointManager(tmp_path / "run" / "checkpoints", keep=1).meta(2)
    assert meta["layout"] == {"dp_shard": 1, "sp": 1, "tp": 1} and meta["model_config"]["model_type"] == "transnormer"
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        export_checkpoint(tmp_path / "run", tmp_path / "x")


def test_a_run_with_its_own_build_refuses_torchrun_before_any_process_waits(monkeypatch, tmp_path):
    """Fine-tuning passes its own build to the run loop; under torchrun that is refused on every
    process at once, before a process group exists (only pretraining is distributed)."""

    def build(config):
        raise AssertionError("built a trainer")

    from tnlm.training.config import load_finetune_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    config = load_finetune_config(None, [f"output={tmp_path / 'run'}", "data.path=x"])
    with pytest.raises(ConfigError, match="tnlm finetune runs in one process: start it without torchrun"):
        train(config, build=build)
    assert not (tmp_path / "run").exists()
