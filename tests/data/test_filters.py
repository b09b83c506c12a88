import json
import math

import pytest

from tnlm.data.decontam import Decontaminate
from tnlm.data.document import Document
from tnlm.data.files import DataError
from tnlm.data.perplexity import ModelScorer, NgramScorer, PerplexityFilter, PerplexityTail, build_scorer
from tnlm.data.toxicity import BadWordsFilter


def doc(text: str, i: int = 0) -> Document:
    return Document(text=text, id=str(i))


def test_bad_words_whole_words_and_cjk_substrings(tmp_path):
    (tmp_path / "words.txt").write_text("# comment\ndarn\n混蛋\n", encoding="utf-8")
    step = BadWordsFilter(words_file=str(tmp_path / "words.txt"))
    assert step.reject_reason(doc("Well, DARN it all.")) == "bad_words_count"
    assert step.reject_reason(doc("He darned his socks.")) is None  # not a whole-word match
    assert step.reject_reason(doc("你这个混蛋！")) == "bad_words_count"
    ratio = BadWordsFilter(words=["darn"], max_ratio=0.2)
    assert ratio.reject_reason(doc("darn " + "fine words here " * 3)) is None
    assert ratio.reject_reason(doc("darn darn fine")) == "bad_words_ratio"
    with pytest.raises(DataError, match="word list"):
        BadWordsFilter()


def eval_file(tmp_path):
    items = [{"goal": "How do I keep basil fresh on the kitchen counter for a week?", "sol1": "Put it in water.",
              "sol2": "Freeze it."},
             {"question": {"stem": "Which gas do plants absorb from the air during photosynthesis?",
                           "choices": [{"text": "carbon dioxide", "label": "A"}]}}]
    path = tmp_path / "evalset" / "dev.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    (path.parent / "README.md").write_text("not an evaluation file")  # folders hold other files too
    return path


def test_decontamination_removes_a_document_quoting_a_test_item(tmp_path):
    step = Decontaminate(eval_paths=[str(eval_file(tmp_path).parent)], ngram=8)
    quoting = "My blog. So, which gas do plants absorb from the air during photosynthesis? Everyone asks."
    assert step.reject_reason(doc(quoting)) == "contaminated"
    assert step.stats.counters["matched_evalset"] == 1
    assert step.reject_reason(doc("Plants absorb light; the air around us has many gases in it.")) is None
    # short items (fewer words than the n-gram) are matched whole; too-short strings are ignored
    assert step.reject_reason(doc("Answer: put it in water.")) is None  # 4 words < min_item_words
    assert step.reject_reason(doc("how do i keep basil fresh on the kitchen counter")) == "contaminated"


def test_decontamination_against_the_shared_eval_sets(shared_data):
    files = [shared_data / p for p in ("piqa/valid.jsonl", "winogrande/dev.jsonl", "arc/ARC-Easy-Dev.jsonl",
                                        "copa/val.jsonl", "boolq/dev.jsonl")]
    step = Decontaminate(eval_paths=[str(f) for f in files])
    for path in files:
        items = [json.loads(line) for line in path.read_text().splitlines()[:50]]
        texts = [i.get("goal") or i.get("sentence") or i.get("premise") or i.get("passage") or i["question"]["stem"]
                 for i in items]
        text = next(t for t in texts if len(t.split()) >= 8)
        assert step.reject_reason(doc(f"An unrelated opening line. {text} And an unrelated end.")) == "contaminated", path
    clean = "The ferry left the harbour after seven, while fog still lay over the grey water near the pier."
    assert step.reject_reason(doc(clean)) is None


REFERENCE = ["The cat sat on the mat. The dog sat on the rug. The bird sat in the tree."] * 20


def test_ngram_scorer_ranks_natural_text_above_noise():
    scorer = NgramScorer(order=4, buckets_log2=16).fit(REFERENCE)
    natural, shuffled, noise = scorer.score(["The dog sat on the mat.", "mat the. on sat dog The", "zq xv kj wq pz"])
    assert natural < shuffled < noise
    with pytest.raises(DataError, match="empty"):
        NgramScorer(buckets_log2=10).fit([])


def test_perplexity_filter_and_tail_drop_the_worst():
    scorer = NgramScorer(order=4, buckets_log2=16).fit(REFERENCE)
    texts = ["The cat sat on the rug.", "The bird sat on the mat.", "qzx vjk wpq", "The dog sat in the tree."]
    threshold = math.exp(sorted(scorer.score(texts))[-2]) + 1e-6
    kept = list(PerplexityFilter(scorer=scorer, max_perplexity=threshold).run([doc(t, i) for i, t in enumerate(texts)]))
    assert "qzx vjk wpq" not in [d.text for d in kept] and len(kept) == 3
    tail = PerplexityTail(scorer=scorer, drop_fraction=0.25)
    tail.fit([(f"0:{i}", doc(t, i)) for i, t in enumerate(texts)])
    assert tail.decisions == {"0:2": "high_perplexity"}
    assert [d.text for d in tail.run([doc(t, i) for i, t in enumerate(texts)], rank=0)] == [texts[i] for i in (0, 1, 3)]


def test_scorer_from_config_trains_on_reference_files(tmp_path):
    (tmp_path / "ref.txt").write_text("\n".join(REFERENCE))
    scorer = build_scorer({"type": "ngram", "reference": [str(tmp_path / "ref.txt")], "order": 3, "buckets_log2": 14})
    assert scorer.score(["The cat sat."])[0] < scorer.score(["Xq zv!"])[0]
    with pytest.raises(DataError, match="unknown scorer"):
        build_scorer({"type": "oracle"})


def test_model_scorer_with_a_tiny_hugging_face_model():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    class CharTokenizer:
        def __call__(self, text, return_tensors, truncation, max_length):
            return {"input_ids": torch.tensor([[ord(c) % 64 for c in text[:max_length]]])}

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    scorer = ModelScorer(LlamaForCausalLM(config), CharTokenizer())
    nll = scorer.score(["hello world", "x"])
    assert 0 < nll[0] < 10 and nll[1] == 0.0  # random weights: about log(64) = 4.2
    assert abs(nll[0] - math.log(64)) < 1.0


def test_self_cleaning_with_a_saved_tnlm_model(tmp_path):
    import tnlm
    from tnlm.data.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(REFERENCE * 5, vocab_size=300, show_progress=False)
    save_tokenizer(tok, tmp_path / "model")
    model = tnlm.create_model("tnl-tiny", overrides={"vocab_size": tok.get_vocab_size()}, seed=0)
    model.save_pretrained(tmp_path / "model")
    step = PerplexityTail(scorer={"type": "model", "path": str(tmp_path / "model"), "max_tokens": 64},
                          drop_fraction=0.5)
    step.fit([(f"0:{i}", doc(t, i)) for i, t in enumerate(["The cat sat.", "qzx 😀 vjk wpq ☃ ¿", "A", "B c"])])
    drop = step.decisions
    assert len(drop) == 2 and all(reason == "high_perplexity" for reason in drop.values())
    nll = step.scorer.score(["The cat sat on the mat."])[0]
    assert abs(nll - math.log(tok.get_vocab_size())) < 1.5  # untrained: close to uniform
