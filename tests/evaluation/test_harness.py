"""lm-evaluation-harness: tnlm's prompts are the harness's own, the `tnlm` model gives tnlm's
numbers, and a converted Llama scores the same in tnlm as in the harness's Hugging Face backend."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

pytest.importorskip("lm_eval", reason="the harness adapter needs lm-eval (pip install 'tnlm[eval]')")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from tests.evaluation.conftest import tiny_model  # noqa: E402
from tnlm.evaluation.harness import TnlmLM, write_harness_tasks  # noqa: E402
from tnlm.evaluation.harness.cli import split_tasks  # noqa: E402
from tnlm.evaluation.model import load_eval_model  # noqa: E402
from tnlm.evaluation.multiple_choice import evaluate_task  # noqa: E402
from tnlm.evaluation.prompts import build_items  # noqa: E402
from tnlm.evaluation.tasks import resolve_task  # noqa: E402

ALL_TASKS = ["piqa", "arc_easy", "arc_challenge", "boolq", "winogrande", "copa", "openbookqa", "hellaswag",
             "social_iqa", "mmlu_high_school_biology", "cmmlu_anatomy", "ceval-valid_accountant"]  # fmt: skip


class RecorderLM(LM):
    """Records what the harness asks; every choice gets the same score."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: dict[str, dict[int, list]] = {}

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        for r in sorted(requests, key=lambda r: r.idx):
            self.requests.setdefault(r.task_name, {}).setdefault(r.doc_id, []).append(tuple(r.args))
        return [(-1.0, False)] * len(requests)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def _harness(data_dir, tmp_path, names, **kwargs) -> tuple[dict, list[str]]:
    tasks = write_harness_tasks(data_dir, tmp_path / "yaml", names)
    tm = TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False)
    return simple_evaluate(tasks=tasks, task_manager=tm, **kwargs), tasks


@pytest.mark.parametrize("k", [0, 2])
def test_prompts_are_the_harness_own(tiny_data, tmp_path, k: int) -> None:
    recorder = RecorderLM()
    _harness(tiny_data, tmp_path, ALL_TASKS, model=recorder, num_fewshot=k)
    assert set(recorder.requests) == set(ALL_TASKS)
    for name in ALL_TASKS:
        task = resolve_task(name, tiny_data)[0]
        fewshot = task.load(tiny_data, task.fewshot_split) if k else None
        items, skipped = build_items(task, task.load(tiny_data, task.eval_split(tiny_data)), fewshot_docs=fewshot, num_fewshot=k)
        assert not skipped
        ours = {it.doc_id: list(it.requests) for it in items}
        assert ours == recorder.requests[name], name


def test_adapter_gives_tnlm_scores(shared_data, tmp_path) -> None:
    model = tiny_model("tnl-tiny")
    names = ["piqa", "arc_challenge", "winogrande", "copa"]
    out, _ = _harness(shared_data, tmp_path, names, model=TnlmLM(model, batch_size=8), limit=8, log_samples=True)
    for name in names:
        ours = evaluate_task(model, resolve_task(name, shared_data)[0], data_dir=shared_data, limit=8, progress=False)
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        theirs = [[r[0] for r in s["filtered_resps"]] for s in samples]
        assert len(theirs) == 8
        for mine, harness in zip(ours.scores, theirs):
            assert list(mine.loglikelihoods) == pytest.approx(harness, abs=1e-4), name
        assert out["results"][name]["acc,none"] == pytest.approx(ours.metrics["acc"][0])
        if "acc_norm" in ours.metrics:
            assert out["results"][name]["acc_norm,none"] == pytest.approx(ours.metrics["acc_norm"][0])


def _llama_dir(path, shared_data) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    corpus = [line for p in ("piqa/valid.jsonl", "copa/val.jsonl") for line in open(shared_data / p, encoding="utf-8")][:400]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, bos_token_id=hf_tok.bos_token_id,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return str(path)


def test_converted_llama_matches_the_harness_hf_backend(shared_data, tmp_path) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from tnlm.models.convert import convert_checkpoint

    llama = _llama_dir(tmp_path / "llama", shared_data)
    convert_checkpoint(llama, tmp_path / "tnlm", to="tnlm")
    ours_model = load_eval_model(tmp_path / "tnlm")
    assert ours_model.model_type == "tnlm_transformer" and ours_model.max_length == 256
    names = ["piqa", "copa", "winogrande"]
    hf = HFLM(pretrained=llama, dtype="float32", device="cpu", batch_size=4)
    out, _ = _harness(shared_data, tmp_path, names, model=hf, limit=6, log_samples=True)
    for name in names:
        ours = evaluate_task(ours_model, resolve_task(name, shared_data)[0], data_dir=shared_data, limit=6, progress=False)
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        for mine, s in zip(ours.scores, samples):
            assert list(mine.loglikelihoods) == pytest.approx([r[0] for r in s["filtered_resps"]], abs=1e-4), name
    # whole-text log-likelihoods (windows of the 256-token context) and greedy generation agree too
    texts = [open(shared_data / "boolq" / "dev.jsonl", encoding="utf-8").readline()[:1500], "short text"]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), 0) for t in texts]
    ours_lm = TnlmLM(ours_model, batch_size=4)
    assert ours_lm.loglikelihood_rolling(rolling, disable_tqdm=True) == pytest.approx(
        hf.loglikelihood_rolling(rolling, disable_tqdm=True), abs=1e-3)  # fmt: skip
    gen = [Instance("generate_until", {}, ("Question: how do I", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}), 0)]
    assert ours_lm.generate_until(gen, disable_tqdm=True) == hf.generate_until(gen, disable_tqdm=True)


def test_builtin_backends_stay_registered() -> None:
    from lm_eval.api.registry import get_model

    assert get_model("tnlm") is TnlmLM and get_model("hf").__name__ == "HFLM"


def test_wrapper_task_arguments() -> None:
    names, rest = split_tasks(["--model", "tnlm", "--tasks", "piqa,copa", "mmlu", "--limit", "2", "--tasks=boolq"])
    assert names == ["piqa", "copa", "mmlu", "boolq"] and rest == ["--model", "tnlm", "--limit", "2"]


def test_wrapper_points_the_harness_at_local_tasks(tiny_data, tmp_path, monkeypatch) -> None:
    from tnlm.evaluation.harness.cli import _local_tasks

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    argv = ["--model", "tnlm", "--tasks", "obqa,lambada", "mmlu", "--limit", "2"]
    out = _local_tasks(str(tiny_data), argv, str(tmp_path / "yaml"))
    assert out == ["--model", "tnlm", "--limit", "2", "--tasks", "openbookqa,lambada,mmlu", "--include_path", str(tmp_path / "yaml")]
    written = sorted(p.name for p in (tmp_path / "yaml").glob("*.yaml"))
    assert written == ["_mmlu_group.yaml", "mmlu_high_school_biology.yaml", "openbookqa.yaml"]
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"  # nothing downloads


def test_wrapper_reports_missing_files(tmp_path, capsys) -> None:
    from tnlm.evaluation.harness.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--model", "tnlm", "--tasks", "piqa", "--tnlm-data-dir", str(tmp_path / "nothing")])
    assert e.value.code == 2 and "valid.jsonl" in capsys.readouterr().err


@pytest.mark.slow  # ~45 s: the harness indexes all its own tasks; the two tests above cover the wrapper's code
def test_lm_eval_command_runs_tnlm_offline(tiny_data, tmp_path, monkeypatch) -> None:
    """The wrapper entry point end to end, in this process (a subprocess would spend its time importing)."""
    from tnlm.evaluation.harness.cli import main

    monkeypatch.setattr(sys, "argv", ["tnlm-lm-eval"])  # main() replaces it; monkeypatch restores it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main(["--model", "tnlm", "--model_args", "pretrained=tnl-tiny", "--tasks", "copa,obqa", "--limit", "2",
          "--tnlm-data-dir", str(tiny_data), "--output_path", str(tmp_path / "out")])  # fmt: skip
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    assert set(results) == {"copa", "openbookqa"} and "acc,none" in results["copa"]


def test_generation_batches_give_what_each_prompt_gives_alone() -> None:
    from lm_eval.api.instance import Instance

    model = tiny_model("tnl-tiny")
    kw = {"until": ["\n", "zz"], "max_gen_toks": 6}
    reqs = [Instance("generate_until", {}, (p, dict(kw)), 0) for p in ("Hello", "A longer prompt here", "x")]
    reqs.append(Instance("generate_until", {}, ("Hi", {"until": "\n", "max_gen_toks": 3}), 0))
    alone = [TnlmLM(model, batch_size=1).generate_until([r], disable_tqdm=True)[0] for r in reqs]
    assert TnlmLM(model, batch_size=3).generate_until(reqs, disable_tqdm=True) == alone
    assert all("\n" not in t and "zz" not in t for t in alone)
