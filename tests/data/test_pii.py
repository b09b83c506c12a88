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
