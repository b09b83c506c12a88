"""What every family's configuration shares: the special-token and cache fields, and a check of every
field's type and range, so a bad value (from Python, an override or a config.json) is a ConfigError
that names the field, not a silent fallback or an error from deep inside torch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from transformers import PreTrainedConfig

from tnlm.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one field must be: `what` completes "<field> must be ..." in the error."""

    what: str
    ok: Callable[[object], bool]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_token_id(v: object) -> bool:
    return _is_int(v) and v >= 0


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda v: isinstance(v, str) and v in choices)


POSITIVE_INT = Rule("a positive integer", lambda v: _is_int(v) and v >= 1)
POSITIVE = Rule("a positive number", lambda v: _is_number(v) and v > 0)
NUMBER = Rule("a finite number", _is_number)
BOOL = Rule("true or false", lambda v: isinstance(v, bool))
TOKEN_ID = Rule("a token id (an integer >= 0) or null", lambda v: v is None or _is_token_id(v))
TOKEN_IDS = Rule(
    "a token id (an integer >= 0), a list of them, or null",
    lambda v: v is None or _is_token_id(v) or (isinstance(v, list) and len(v) > 0 and all(map(_is_token_id, v))),
)
SHARED_RULES = {
    "pad_token_id": TOKEN_ID, "bos_token_id": TOKEN_ID, "eos_token_id": TOKEN_IDS,
    "tie_word_embeddings": BOOL, "use_cache": BOOL,
}  # fmt: skip
# PreTrainedConfig's bookkeeping, never a field to override
_NOT_FIELDS = ("model_type", "transformers_version", "_name_or_path")


class DecoderConfig(PreTrainedConfig):
    """Base of the family configs. A family lists its own fields' rules in RULES (checked in order,
    so a derived field is checked after what it derives from) and adds cross-field rules in
    `check_consistency`."""

    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    RULES: ClassVar[dict[str, Rule]] = {}

    def __init__(
        self,
        *,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        tie_word_embeddings: bool = False,
        **kwargs,  # PreTrainedConfig's own fields (architectures, dtype, ...)
    ) -> None:
        self.use_cache = use_cache
        shared = dict(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                      tie_word_embeddings=tie_word_embeddings)  # fmt: skip
        for field, value in shared.items():
            setattr(self, field, value)
        self.check_fields()  # before Hugging Face's own __init__, which may trip over a bad value
        try:
            super().__init__(**shared, **kwargs)
        except (TypeError, ValueError, AttributeError) as e:  # a generic Hugging Face field is malformed
            raise ConfigError(f"{type(self).__name__}: {e}") from None

    def check_fields(self) -> None:
        """Raise a ConfigError that names the field to fix."""
        name = type(self).__name__
        for field, rule in {**self.RULES, **SHARED_RULES}.items():
            value = getattr(self, field)
            if not rule.ok(value):
                raise ConfigError(f"{name}.{field} must be {rule.what}, got {value!r}")
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ConfigError(f"{name}.pad_token_id ({self.pad_token_id}) must be below vocab_size ({self.vocab_size})")
        self.check_consistency()

    def check_consistency(self) -> None:
        """The family's rules between fields (e.g. heads dividing the width)."""

    @classmethod
    def field_names(cls) -> list[str]:
        """The fields an override may set: the family's own and the shared ones."""
        return [*cls.RULES, *SHARED_RULES]

    @classmethod
    def check_overrides(cls, overrides: dict) -> None:
        """Refuse a key this config does not have (a typo would otherwise be kept and never read)."""
        known = set(cls().to_dict()) - set(_NOT_FIELDS)
        unknown = [k for k in overrides if k not in known]
        if unknown:
            fields = ", ".join(cls.field_names())
            raise ConfigError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; its fields: {fields}")
