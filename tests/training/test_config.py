from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tnlm.errors import ConfigError
from tnlm.models import meta_model
from tnlm.training.config import differences, load_train_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_overrides_win_over_the_file_and_take_the_field_type(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "data: {path: a, seq_len: 128}\noptimizer: {lr: 0.1}\n")
    cfg = load_train_config(cfg_file, ["optimizer.lr=1e-3", "optimizer.betas=[0.8, 0.9]", "train.compile=true",
                                       "data.seq_len=64", "model.overrides.decoder_layers=2", "optimizer.fused=false"])
    assert cfg.optimizer.lr == 0.001 and isinstance(cfg.optimizer.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.optimizer.betas == [0.8, 0.9] and cfg.train.compile is True
    assert cfg.data.seq_len == 64 and cfg.data.path == "a" and cfg.data.batch_size == 8  # default kept
    assert cfg.model.overrides == {"decoder_layers": 2} and cfg.optimizer.fused == "false"


@pytest.mark.parametrize(
    "override, match",
    [
        ("optimizer.lrr=1", r"unknown config key optimizer\.lrr \(did you mean optimizer\.lr\?\); optimizer knows: lr, weight_decay, betas"),
        ("traine.steps=3", r"unknown config key traine \(did you mean train\?\); the config knows: output, seed, model"),
        ("data.seq_len=many", r"data\.seq_len must be an integer, got 'many'"),
        ("schedule.decay=exp", r"schedule\.decay is 'exp'; choose one of cosine, linear, constant"),
        ("train.grad_accum=0", r"train\.grad_accum must be at least 1"),
        ("optimizer.lr", r"must look like section\.key=value"),
        ("data=3", r"data must be a mapping"),
    ],
    ids=["typo-in-section", "unknown-section", "bad-type", "bad-choice", "out-of-range", "no-equals", "section-as-value"],
)
def test_bad_settings_are_refused_with_what_to_do(override, match):
    with pytest.raises(ConfigError, match=match):
        load_train_config(None, ["data.path=x", override])


def test_unknown_key_in_the_file_is_refused(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "data: {path: a}\ncheckpoint: {evry: 10}\n")
    with pytest.raises(ConfigError, match=r"checkpoint\.evry .*checkpoint knows: every, keep"):
        load_train_config(cfg_file)


def test_data_path_is_required_and_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path is not set.*data\.path=data/packed"):
        load_train_config(None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_train_config(None, ["data.path=d", "optimizer.lr=2e-4", "model.overrides={glu_dim: 96}"])
    again = load_train_config(write(tmp_path / "r.yaml", cfg.to_yaml()))
    assert again == cfg


def test_differences_list_only_what_changes_training():
    a = load_train_config(None, ["data.path=d"]).to_dict()
    b = load_train_config(None, ["data.path=elsewhere", "eval.every=7", "log.progress=false", "optimizer.lr=0.5",
                                 "model.name=transformer-tiny"]).to_dict()  # fmt: skip
    assert differences(a, b) == [
        "model.name: 'tnl-tiny' in the run, 'transformer-tiny' now",
        "optimizer.lr: 0.001 in the run, 0.5 now",
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "train").glob("*.yaml")))
def test_example_configs_load_and_name_real_models(name):
    path = REPO / "configs" / "train" / name
    text = path.read_text()
    assert text.startswith("#"), "each example config starts with a comment saying how to run it"
    cfg = load_train_config(path, ["data.path=somewhere"])
    raw = yaml.safe_load(text)
    assert raw.get("data", {}).get("path") in (None, "data/packed"), "configs must not point into ../shared"
    model = meta_model(cfg.model.name, overrides=cfg.model.overrides or None)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_missing_config_file_points_to_the_examples_of_its_command(tmp_path):
    from tnlm.training.config import load_finetune_config

    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist \(examples: configs/train/\*\.yaml\)"):
        load_train_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist \(examples: configs/finetune/\*\.yaml\)"):
        load_finetune_config(tmp_path / "nope.yaml")
    assert list((REPO / "configs" / "finetune").glob("*.yaml")) and list((REPO / "configs" / "train").glob("*.yaml"))
