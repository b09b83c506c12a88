"""acc, acc_norm (log-likelihood per character, lm-eval's definition) and standard errors."""

from __future__ import annotations

import math

import pytest

from tests.evaluation.conftest import tiny_model
from tnlm.evaluation.multiple_choice import ItemScore, apply_limit, evaluate_task, item_metrics, mean_stderr
from tnlm.evaluation.prompts import MCItem
from tnlm.evaluation.tasks import resolve_task


def _item(lengths: tuple[int, ...], gold: int) -> MCItem:
    return MCItem(doc_id=0, requests=tuple(("c", " x") for _ in lengths), choice_lengths=lengths, gold=gold)


def test_acc_norm_divides_by_characters() -> None:
    # -10 over 5 characters (-2.0 per char) loses to -12 over 20 characters (-0.6 per char)
    items = [_item((5, 20), gold=1)]
    scores = [ItemScore(0, (-10.0, -12.0), (False, False), gold=1)]
    metrics = item_metrics(items, scores)
    assert metrics == {"acc": [0.0], "acc_norm": [1.0]}


def test_ties_go_to_the_first_choice() -> None:
    items = [_item((4, 4, 4), gold=0), _item((4, 4, 4), gold=1)]
    scores = [ItemScore(0, (-3.0, -3.0, -5.0), (False,) * 3, gold=0), ItemScore(0, (-3.0, -3.0, -5.0), (False,) * 3, gold=1)]
    assert item_metrics(items, scores)["acc"] == [1.0, 0.0]


def test_mean_and_standard_error() -> None:
    mean, stderr = mean_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and stderr == pytest.approx(0.25)  # sample variance 0.25, / n = 4
    assert math.isnan(mean_stderr([1.0])[1]) and math.isnan(mean_stderr([])[0])


def test_limit_counts_and_fractions() -> None:
    docs = [{"i": i} for i in range(10)]
    assert len(apply_limit(docs, 3)) == 3 and len(apply_limit(docs, 0.25)) == 3 and apply_limit(docs, None) == docs
    with pytest.raises(ValueError):
        apply_limit(docs, 0)


def test_task_result_agrees_with_its_item_scores(tiny_data) -> None:
    model = tiny_model("tnl-tiny")
    task = resolve_task("arc_easy", tiny_data)[0]
    result = evaluate_task(model, task, data_dir=tiny_data, limit=4, progress=False)
    assert result.items == 4 and result.split == "test" and result.context_reuse
    golds = [s.gold for s in result.scores]
    assert golds == [0, 1, 2, 0]  # answer keys A, 2, C, A of the tiny file
    acc = sum(s.pred == s.gold for s in result.scores) / 4
    assert result.metrics["acc"][0] == pytest.approx(acc)
    assert 0.0 <= result.metrics["acc_norm"][0] <= 1.0
