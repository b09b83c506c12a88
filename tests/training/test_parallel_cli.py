"""`torchrun --nproc_per_node 2 -m tnlm train ...` as a user runs it: a 2-way FSDP run, resumed in one
process, exported with `tnlm export`; and launches that cannot work, refused before anyone waits."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.helpers.distributed import torchrun
from tests.training.conftest import tiny_config
from tnlm.training import load_train_config, train
from tnlm.training.logs import read_metrics


def _losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


@pytest.fixture(scope="module")
def fsdp_run(corpus, tmp_path_factory):
    """A 2-way FSDP run of 6 steps, checkpoints at 3 and 6."""
    root = tmp_path_factory.mktemp("cli")
    config = root / "run.yaml"
    config.write_text(tiny_config(root / "fsdp", corpus).to_yaml())
    done = torchrun(2, "-m", "tnlm", "train", str(config), "parallel.dp_shard=2")
    assert done.returncode == 0, done.output[-4000:]
    return root, config, done.output


def test_a_torchrun_run_shards_its_checkpoints_and_writes_one_model(fsdp_run):
    root, _, output = fsdp_run
    run = root / "fsdp"
    assert "2-way FSDP" in output
    assert output.count("validation loss") == 2  # the final pass, once in the log and once by the command
    for step in (3, 6):
        assert sorted(p.name for p in (run / "checkpoints" / f"step-{step:06d}").glob("*.distcp")) == [
            "__0_0.distcp", "__1_0.distcp"]  # fmt: skip
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "tokenizer.json").is_file()
    assert sorted(_losses(run)) == [1, 2, 3, 4, 5, 6]


def test_one_process_resumes_a_two_process_checkpoint(fsdp_run, tmp_path, capsys):
    from tnlm.cli.main import main

    root, config, _ = fsdp_run
    run = tmp_path / "resumed"
    shutil.copytree(root / "fsdp", run)
    shutil.rmtree(run / "checkpoints" / "step-000006")
    shutil.rmtree(run / "model")
    saved = run / "config.yaml"  # the copy is a run of its own: its output is its new place
    saved.write_text(saved.read_text().replace(str(root / "fsdp"), str(run)))
    train(load_train_config(config, [f"output={run}"]), resume=True)  # here, in this one process
    ours, theirs = _losses(run), _losses(root / "fsdp")
    assert sorted(ours) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert ours[step] == pytest.approx(theirs[step], rel=1e-5)
    exported = tmp_path / "exported"
    assert main(["export", str(root / "fsdp"), str(exported)]) == 0
    assert f"to {exported}" in capsys.readouterr().out
    import tnlm.models  # noqa: F401
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 500, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(exported)(ids).logits
        b = AutoModelForCausalLM.from_pretrained(run / "model")(ids).logits
    assert ((a - b).norm() / b.norm()).item() < 1e-5


def test_export_refuses_what_it_cannot_export(fsdp_run, tmp_path, capsys):
    from tnlm.cli.main import main

    root, _, _ = fsdp_run
    cases = {
        (str(tmp_path / "nothing"), str(tmp_path / "a")): "does not exist",
        (str(root / "fsdp"), str(root / "fsdp")): "already exists",
        (str(root / "fsdp"), str(tmp_path / "b"), "--step", "4"): "no checkpoint of step 4; it has steps 3, 6",
    }
    for args, message in cases.items():
        assert main(["export", *args]) == 2
        assert message in capsys.readouterr().err, args


def test_a_launch_that_cannot_work_fails_on_every_process_at_once(corpus, tmp_path):
    """The layout is checked against torchrun's WORLD_SIZE before any process waits for another (the
    other refusals are the same code path, tested in test_parallel.py without processes)."""
    config = tmp_path / "run.yaml"
    config.write_text(tiny_config(tmp_path / "run", corpus, "data.batch_size=6").to_yaml())
    done = torchrun(2, "-m", "tnlm", "train", str(config), "parallel.dp_shard=3", limit=120)
    assert done.returncode != 0
    message = "error: parallel.dp_shard * sp * tp = 3 * 1 * 1 = 3, but this run has 2 process(es): launch with"
    assert done.output.count(message) == 2, done.output[-3000:]  # each process, one line
    assert not (tmp_path / "run").exists()
