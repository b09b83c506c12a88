"""PII masking with regular expressions and validators: emails, phone numbers, IP addresses (checked
with `ipaddress`), payment card numbers (Luhn checksum), US social security numbers (the SSA's
allocation rules) and Chinese resident ID numbers (ISO 7064 MOD 11-2 check digit and a real birth
date). A match that fails its validator is left alone, so look-alikes such as order numbers survive."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable

from tnlm.data.step import Mapper


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def us_ssn_ok(ssn: str) -> bool:
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id_ok(number: str) -> bool:
    body, check = number[:17], number[17].upper()
    if not body.isdigit():
        return False
    if "10X98765432"[sum(int(d) * w for d, w in zip(body, CN_ID_WEIGHTS)) % 11] != check:
        return False
    try:
        born = datetime.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    return datetime.date(1900, 1, 1) <= born <= datetime.date.today()


def ip_ok(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    # "::2" in `x[::2]` parses as IPv6; ask for three groups, as written addresses have
    return address.version == 4 or sum(1 for group in text.split(":") if group) >= 3


def _always(_: str) -> bool:
    return True


# (placeholder, pattern, validator, numeric); earlier kinds win where matches overlap. Numeric kinds
# are searched only inside runs of digits and separators (CANDIDATE_RE), which is ~10x faster than
# running each pattern over the whole text.
PATTERNS: list[tuple[str, re.Pattern[str], Callable[[str], bool], bool]] = [
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), _always, False),
    ("NATIONAL_ID", re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])"), cn_id_ok, True),
    ("NATIONAL_ID", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), us_ssn_ok, True),
    ("CREDIT_CARD", re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])"), luhn_ok, True),
    # a full stop may follow an address ("at 10.1.2.3."), a fifth number may not ("1.2.3.4.5")
    ("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)"), ip_ok, True),
    # IPv6 beside CJK text (no spaces) is fine; a trailing ":" is punctuation (see `find`)
    ("IP_ADDRESS", re.compile(r"(?<![0-9A-Za-z_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z_:])"),
     ip_ok, False),
    ("PHONE", re.compile(r"(?<![\d+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}"
                         r"(?![ .-]?\d)"), _always, True),
    ("PHONE", re.compile(r"(?<!\d)(?:\+86[ -]?)?1[3-9]\d{9}(?!\d)"), _always, True),
]
CANDIDATE_RE = re.compile(r"[\d+(][\d ().+-]{5,}\d")


class PIIMasker(Mapper):
    """Replaces PII with typed placeholders such as `<EMAIL>` and counts each kind."""

    name = "pii"

    def __init__(self, *, kinds: list[str] | None = None, template: str = "<{kind}>") -> None:
        super().__init__()
        known = {kind for kind, *_ in PATTERNS}
        unknown = set(kinds or ()) - known
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {sorted(known)}")
        self.patterns = [p for p in PATTERNS if kinds is None or p[0] in kinds]
        self.template = template

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping (start, end, kind) spans of validated PII, in text order."""
        # windows around digit runs; 2 extra characters let lookarounds and a final "X" check digit see
        windows = [(max(m.start() - 2, 0), min(m.end() + 2, len(text))) for m in CANDIDATE_RE.finditer(text)]
        spans: list[tuple[int, int, str]] = []
        for kind, pattern, valid, numeric in self.patterns:
            for start, end in windows if numeric else [(0, len(text))]:
                for m in pattern.finditer(text, start, end):
                    found, stop = m.group(), m.end()
                    if not valid(found) and found.endswith(":"):  # "at fe80::1:", the colon ends the sentence
                        found, stop = found[:-1], stop - 1
                    overlaps = any(m.start() < e and s < stop for s, e, _ in spans)
                    if not overlaps and valid(found):
                        spans.append((m.start(), stop, kind))
        return sorted(spans)

    def transform(self, text: str) -> str:
        spans = self.find(text)
        if not spans:
            return text
        out, last = [], 0
        for start, end, kind in spans:
            out.append(text[last:start] + self.template.format(kind=kind))
            self.count(kind)
            last = end
        return "".join(out) + text[last:]


_EXCERPT_MASKER: PIIMasker | None = None
LONGEST_PII = 256  # characters: an email address can be this long, every other kind is shorter


def masked_excerpt(text: str, chars: int) -> str:
    """The first `chars` characters of `text` with every kind of PII masked, whatever the pipeline's own
    `pii` step masks and wherever it runs: reports quote removed documents through this. A PII that the
    cut would split is masked whole (the prefix searched reaches LONGEST_PII characters past the cut)."""
    global _EXCERPT_MASKER
    _EXCERPT_MASKER = _EXCERPT_MASKER or PIIMasker()
    size = chars + LONGEST_PII
    while True:
        prefix = text[:size]
        out, last = "", 0
        for start, end, kind in _EXCERPT_MASKER.find(prefix):
            if len(out) + start - last >= chars:
                break
            out, last = out + prefix[last:start] + f"<{kind}>", end
        consumed = last + max(chars - len(out), 0)  # where in `text` the excerpt ends
        if consumed + LONGEST_PII <= len(prefix) or len(prefix) == len(text):
            return (out + prefix[last:consumed])[:chars]
        size *= 2
