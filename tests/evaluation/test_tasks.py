"""Task readers and prompts on hand-written documents, k-shot determinism, bad input, the shared data."""

from __future__ import annotations

import json

import pytest

from tests.evaluation.conftest import write_arc
from tnlm.evaluation.prompts import build_items
from tnlm.evaluation.tasks import TaskDataError, resolve_task
from tnlm.evaluation.tasks.commonsense import hellaswag_clean


def _items(name: str, root, k: int = 0, seed: int = 1234):
    task = resolve_task(name, root)[0]
    split = task.eval_split(root)
    fewshot = task.load(root, task.fewshot_split) if k else None
    return build_items(task, task.load(root, split), fewshot_docs=fewshot, num_fewshot=k, seed=seed)


def test_piqa_prompt_and_labels(tiny_data) -> None:
    items, skipped = _items("piqa", tiny_data)
    assert not skipped and len(items) == 6
    assert items[1].requests == (("Question: valid goal 1\nAnswer:", " do thing 1."), ("Question: valid goal 1\nAnswer:", " do other 1."))
    assert [it.gold for it in items] == [0, 1, 0, 1, 0, 1]
    assert items[1].choice_lengths == (len("do thing 1."), len("do other 1."))


def test_arc_labels_may_be_digits(tiny_data) -> None:
    items, _ = _items("arc_easy", tiny_data)  # Test split present: the harness evaluates on it
    assert items[0].requests[0] == ("Question: Test question 0?\nAnswer:", " Test answer 0A")
    assert len(items[1].requests) == 3 and items[1].gold == 1  # labels 1/2/3, answerKey "2"


def test_boolq_winogrande_copa_prompts(tiny_data) -> None:
    items, _ = _items("boolq", tiny_data)
    assert items[0].requests == (("Passage dev 0.\nQuestion: is dev 0 true?\nAnswer:", " no"),
                                 ("Passage dev 0.\nQuestion: is dev 0 true?\nAnswer:", " yes"))  # fmt: skip
    assert [it.gold for it in items[:2]] == [1, 0]  # answer true -> "yes"
    items, _ = _items("winogrande", tiny_data)
    assert items[0].requests == (
        ("Ann gave Bo the dev book 0 because Ann", " was done with it."),
        ("Ann gave Bo the dev book 0 because Bo", " was done with it."),
    )
    assert [it.gold for it in items[:2]] == [0, 1]
    items, _ = _items("copa", tiny_data)
    assert items[0].requests == (("The val man 0 ran therefore", "  he was late."), ("The val man 0 ran therefore", "  he Was tired."))
    assert items[1].requests[0][0] == "The val man 1 ran because" and items[1].gold == 1


def test_hellaswag_preprocessing() -> None:
    assert hellaswag_clean(" A man [title] mixes flour. [step] Then  he bakes. ") == "A man. mixes flour. Then he bakes."


def test_hellaswag_siqa_openbookqa_prompts(tiny_data) -> None:
    items, _ = _items("hellaswag", tiny_data)
    assert items[0].requests[0] == ("Baking val: A man. mixes flour 0. Then he", " bakes it 0.")
    assert items[0].requests[1][1] == " eats it." and items[2].gold == 2
    items, _ = _items("siqa", tiny_data)
    assert items[0].requests[2] == ("Q: Sam dev 0 won. How does Sam feel?\nA:", " bored")
    assert [it.gold for it in items[:3]] == [0, 1, 2]
    items, _ = _items("openbookqa", tiny_data)
    assert items[1].requests[1] == ("test stem 1", " opt 1B") and items[1].gold == 1


def test_mmlu_style_prompts_with_first_n_examples(tiny_data) -> None:
    items, _ = _items("mmlu_high_school_biology", tiny_data, k=2)
    expected = (
        "The following are multiple choice questions (with answers) about high school biology.\n\n"
        "dev q0?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer: A\n\n"
        "dev q1?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer: B\n\n"
        "test q3?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:"
    )
    assert items[3].requests[2] == (expected, " C") and items[3].gold == 3
    items, _ = _items("cmmlu", tiny_data, k=1)
    assert items[0].requests[0][0] == "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n问题0\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案： A\n\n问题0\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案："
    items, _ = _items("ceval", tiny_data)
    assert items[2].requests[0][0].startswith("以下是中国关于注册会计师的单项选择题") and items[2].gold == 2


def test_benchmark_name_expands_to_every_subject(tiny_data) -> None:
    (tiny_data / "mmlu" / "data" / "test" / "anatomy_test.csv").write_text("q?,a,b,c,d,A\n")
    names = [t.name for t in resolve_task("mmlu", tiny_data)]
    assert names == ["mmlu_anatomy", "mmlu_high_school_biology"]


def test_kshot_prompts_are_deterministic_and_from_the_training_split(tiny_data) -> None:
    first, _ = _items("piqa", tiny_data, k=3, seed=7)
    again, _ = _items("piqa", tiny_data, k=3, seed=7)
    other, _ = _items("piqa", tiny_data, k=3, seed=8)
    assert [it.requests for it in first] == [it.requests for it in again]
    assert [it.requests for it in first] != [it.requests for it in other]
    context = first[0].requests[0][0]
    assert context.count("Question: train goal") == 3 and "Question: valid goal" in context.split("\n\n")[-1]
    assert context.count("\n\n") == 3 and "Question: valid goal 0" not in context.split("\n\n")[0]
    # each solved example ends with its gold answer: train doc i has label i % 2
    for block in context.split("\n\n")[:3]:
        i = int(block.split("train goal ")[1].split("\n")[0])
        assert block.endswith(f"do thing {i}." if i % 2 == 0 else f"do other {i}.")


def test_winogrande_kshot_uses_the_gold_option(tiny_data) -> None:
    items, _ = _items("winogrande", tiny_data, k=1)
    shot = items[0].requests[0][0].split("\n\n")[0]
    i = int(shot.split("train book ")[1].split(" ")[0])
    assert shot == f"Ann gave Bo the train book {i} because {'Ann' if i % 2 == 0 else 'Bo'} was done with it."


def test_missing_folder_names_the_expected_files(tmp_path) -> None:
    task = resolve_task("piqa", tmp_path)[0]
    with pytest.raises(TaskDataError) as e:
        task.eval_split(tmp_path)
    assert "valid.jsonl" in str(e.value) and "valid-labels.lst" in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(TaskDataError, match="SUBJECT_test.csv"):
        resolve_task("mmlu", tmp_path)


def test_unknown_task_lists_the_known_ones(tmp_path) -> None:
    with pytest.raises(TaskDataError) as e:
        resolve_task("piqaa", tmp_path)
    message = str(e.value)
    assert "unknown task 'piqaa'" in message
    for name in ("piqa", "arc_easy", "arc_challenge", "boolq", "winogrande", "copa", "hellaswag", "openbookqa", "social_iqa", "mmlu"):
        assert name in message


def test_answer_not_among_choices_is_reported_not_scored(tmp_path) -> None:
    write_arc(tmp_path, n=4)
    path = tmp_path / "arc" / "ARC-Easy-Test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["answerKey"] = "E"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items, skipped = _items("arc_easy", tmp_path)
    assert [it.doc_id for it in items] == [0, 1, 3]
    assert len(skipped) == 1 and skipped[0].doc_id == 2 and "'E' is not among the choice labels" in skipped[0].reason


def test_labels_file_must_match_the_data(tiny_data) -> None:
    (tiny_data / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(TaskDataError, match="2 labels but its data file has 6 documents"):
        resolve_task("piqa", tiny_data)[0].load(tiny_data, "validation")


def test_broken_jsonl_names_file_and_line(tiny_data) -> None:
    path = tiny_data / "copa" / "val.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(TaskDataError, match="val.jsonl, line 7: not valid JSON"):
        resolve_task("copa", tiny_data)[0].load(tiny_data, "validation")


@pytest.mark.parametrize(
    "name,count", [("piqa", 1838), ("arc_easy", 570), ("arc_challenge", 299), ("boolq", 3270), ("winogrande", 1267), ("copa", 100)]
)
def test_shared_data_reads_completely(shared_data, name: str, count: int) -> None:
    task = resolve_task(name, shared_data)[0]
    split = task.eval_split(shared_data)
    assert split == "validation"  # the shared ARC files are the Dev split (no Test file there)
    items, skipped = build_items(task, task.load(shared_data, split))
    assert len(items) + len(skipped) == count and not skipped
    n_choices = {len(it.requests) for it in items}
    assert n_choices <= {2, 3, 4, 5}
    assert all(0 <= it.gold < len(it.requests) for it in items)
