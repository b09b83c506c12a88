"""A step option of the wrong type is refused with its name and expected type, before any work."""

from pathlib import Path

import pytest

from tnlm.data.pipeline import PipelineConfig
from tnlm.data.registry import build_step, check_option_types, STEPS
from tnlm.errors import DataError


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"step": "gopher_quality", "min_words": "abc"}, "option min_words must be a whole number, got 'abc'"),
        ({"step": "gopher_quality", "min_words": True}, "option min_words must be a whole number"),
        ({"step": "gopher_quality", "max_symbol_word_ratio": "0.1"}, "max_symbol_word_ratio must be a number"),
        ({"step": "gopher_quality", "stop_words": "the"}, "stop_words must be a list of a string or null"),
        ({"step": "gopher_quality", "languages": {"zh": {"min_words": "x"}}}, "option languages.zh.min_words"),
        ({"step": "minhash_dedup", "threshold": [0.8]}, "option threshold must be a number"),
        ({"step": "normalize", "collapse_spaces": "yes"}, "collapse_spaces must be true or false"),
    ],
)
def test_wrong_option_types_are_refused(entry, message):
    with pytest.raises(DataError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_step(entry)


def test_right_option_types_are_accepted():
    build_step({"step": "gopher_quality", "min_words": 3, "max_symbol_word_ratio": 1, "min_mean_word_length": None,
                "stop_words": ["the", "and"], "languages": {"zh": {"max_mean_clause_chars": 12}}})
    build_step({"step": "minhash_dedup", "ngram": 5, "threshold": 0.7})


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "data").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_pass_the_type_check(path):
    for entry in PipelineConfig.from_yaml(path).steps:
        check_option_types(STEPS[entry["step"]], {k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
