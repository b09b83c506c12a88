import pytest

from tnlm.data.pii import PIIMasker, cn_id_ok, luhn_ok, us_ssn_ok


@pytest.mark.parametrize(("text", "expected"), [
    ("write to jane.doe+news@mail.example.org today", "write to <EMAIL> today"),
    ("call (555) 123-4567 or +1 415-555-0100.", "call <PHONE> or <PHONE>."),
    ("手机 13812345678 联系", "手机 <PHONE> 联系"),
    ("server 192.168.10.254 and 2001:db8::8a2e:370:7334 down", "server <IP_ADDRESS> and <IP_ADDRESS> down"),
    ("card 4111 1111 1111 1111 expires", "card <CREDIT_CARD> expires"),
    ("card 5500-0000-0000-0004 ok", "card <CREDIT_CARD> ok"),
    ("SSN 123-45-6789.", "SSN <NATIONAL_ID>."),
    ("身份证号11010519491231002X，请保密", "身份证号<NATIONAL_ID>，请保密"),
])
def test_masks_each_kind(text, expected):
    assert PIIMasker().transform(text) == expected


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "version 1.2.3.4.5 and 999.1.1.1 are not addresses",
    "SSN-like 000-12-3456 and 666-12-3456 and 123-00-4567 are never issued",
    "假号110105194912310021校验位错",  # right shape, wrong check digit
    "假号110105194913310028日期错",  # month 13
    "meeting 2024-01-15 at 10:30, score 3-2, pi 3.14159, order 12345",
    "slices x[::2] and y[1::3] and C++ a::b are code, not IPv6",
])
def test_look_alikes_survive(text):
    assert PIIMasker().transform(text) == text


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert us_ssn_ok("123-45-6789") and not us_ssn_ok("900-12-3456")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")


def test_counts_by_kind_and_kind_selection():
    step = PIIMasker()
    text = "a@b.io, c@d.io and 10.0.0.1"
    assert step.transform(text) == "<EMAIL>, <EMAIL> and <IP_ADDRESS>"
    assert step.stats.counters["EMAIL"] == 2 and step.stats.counters["IP_ADDRESS"] == 1
    assert PIIMasker(kinds=["EMAIL"]).transform(text) == "<EMAIL>, <EMAIL> and 10.0.0.1"
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PIIMasker(kinds=["PASSPORT"])


SAMPLES = {
    "EMAIL": ["jane.doe+news@mail.example.org"],
    "PHONE": ["+1 415-555-0100", "(555) 123-4567", "13812345678", "+86 13812345678"],
    "IP_ADDRESS": ["10.1.2.3", "2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a"],
    "CREDIT_CARD": ["4111 1111 1111 1111", "5500-0000-0000-0004", "4111111111111111"],
    "NATIONAL_ID": ["123-45-6789", "11010519491231002X"],
}
PUNCTUATION = list(".,;:!?)]}\"'") + list("。，；：！？）」』》、") + ["…", "..."]
CASES = [(kind, value) for kind, values in SAMPLES.items() for value in values]


@pytest.mark.parametrize(("kind", "value"), CASES)
def test_every_kind_at_the_start_and_end_of_a_text(kind, value):
    masker = PIIMasker()
    assert masker.transform(value) == f"<{kind}>"
    assert masker.transform(f"{value} is mine") == f"<{kind}> is mine"
    assert masker.transform(f"mine is {value}") == f"mine is <{kind}>"
    assert masker.transform(f"联系{value}。") == f"联系<{kind}>。"  # no spaces around it in CJK text
    assert masker.transform(f"({value})") == f"(<{kind}>)"


@pytest.mark.parametrize("mark", PUNCTUATION)
@pytest.mark.parametrize(("kind", "value"), CASES)
def test_every_kind_before_each_punctuation_mark(kind, value, mark):
    masker = PIIMasker()
    assert masker.transform(f"Server at {value}{mark}") == f"Server at <{kind}>{mark}"
    assert masker.transform(f"Server at {value}{mark} Next one.") == f"Server at <{kind}>{mark} Next one."


def test_an_ipv4_address_ending_a_sentence():
    assert PIIMasker().transform("Server at 10.1.2.3. Back soon.") == "Server at <IP_ADDRESS>. Back soon."
    assert PIIMasker().transform("Version 1.2.3.4.5 stays.") == "Version 1.2.3.4.5 stays."


def test_excerpts_mask_every_kind_and_never_split_one():
    from tnlm.data.pii import masked_excerpt

    for kind, value in CASES:
        for cut in range(len(value) + 2):  # the excerpt's end falls everywhere inside the value
            text = "x" * (199 - cut) + " " + value + " tail"
            excerpt = masked_excerpt(text, 200)
            assert len(excerpt) <= 200 and not any(d in excerpt for d in "0123456789@"), (kind, cut, excerpt[-30:])
            assert excerpt.startswith("x" * (199 - cut) + " ")
    long_text = "call 13812345678 now. " * 500
    assert masked_excerpt(long_text, 200) == PIIMasker().transform(long_text)[:200]


@pytest.mark.parametrize("pii_first", [True, False], ids=["pii-first", "pii-last"])
def test_report_examples_never_quote_pii(tmp_path, pii_first):
    """Removed documents are quoted in report.json; whether the pii step runs before or after the step
    that removes them (or not at all), the quotes are masked."""
    import json

    from tnlm.data.pipeline import run_pipeline

    values = [value for _, value in CASES]
    # every removed note holds every kind, rotated so the quote's 200-character cut falls inside different ones
    rows = [{"id": f"d{i}", "text": f"Short note {i}: reach me at " + " or ".join(values[i:] + values[:i]) + "."}
            for i in range(len(values))]
    rows.append({"id": "keep", "text": "A long enough document about the sea and the harbour and the boats. " * 5})
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    steps = [{"step": "gopher_quality", "min_words": 30}, {"step": "length", "min_chars": 1}]
    steps = ([{"step": "pii"}] if pii_first else []) + steps
    run_pipeline({"source": {"type": "files", "paths": [str(tmp_path / "in.jsonl")]}, "output": str(tmp_path / "out"),
                  "steps": steps}, progress=False)
    report = (tmp_path / "out" / "report.json").read_text(encoding="utf-8")
    examples = [e for row in json.loads(report)["steps"] for e in row["examples"]]
    assert len(examples) == 5 and all("reach me at <" in e["text"] for e in examples)
    assert not any(value in report for value in values)
