"""The OpenAI-compatible wire format: request and response schemas, and errors as values.

Requests are validated strictly (pydantic strict mode, unknown fields refused): a typo such as
`temprature` or a string where a number belongs gets a 400 naming the field, never a silent default.
Fields the OpenAI API has but tnlm cannot honour (logprobs, tools, logit_bias, ...) are accepted only
at their neutral value and otherwise refused with a message that says so. `top_k` and
`repetition_penalty` are tnlm extensions (the openai client sends them through `extra_body`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16  # choices per prompt
MAX_STOP = 4  # stop strings, as the OpenAI API allows
MAX_SEED = 2**63 - 1 - MAX_N  # seed + i must stay a valid 64-bit seed
MAX_INT = 2**31 - 1


# --------------------------------------------------------------------------------------------------
# errors as values


@dataclass(frozen=True)
class ServingError:
    """An error response: HTTP status and the OpenAI error body {"error": {message, type, param, code}}."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ServingError:
    return ServingError(400, message, param=param, code=code)


# --------------------------------------------------------------------------------------------------
# requests


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool | None = None


class _SamplingRequest(_Strict):
    """The fields completions and chat completions share."""

    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_INT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for the caller's records; not used
    # accepted at their neutral value only (see `unsupported`)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # tnlm extensions
    top_k: int | None = Field(None, ge=0, le=MAX_INT)
    repetition_penalty: float | None = Field(None, gt=0, le=10)

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> ServingError | None:
        """A 400 for a field set to something tnlm does not do; None when every field is honoured."""
        neutral = {
            "frequency_penalty": self.frequency_penalty in (None, 0),
            "presence_penalty": self.presence_penalty in (None, 0),
            "logit_bias": not self.logit_bias,
        }
        for name, ok in neutral.items():
            if not ok:
                hint = " (tnlm's repetition_penalty, > 1, discourages repeats)" if "penalty" in name else ""
                return invalid(f"{name} is not supported by this server; leave it unset{hint}", param=name)
        stops = self.stop_list()
        if len(stops) > MAX_STOP or any(not s for s in stops):
            return invalid(f"stop takes up to {MAX_STOP} non-empty strings", param="stop")
        if self.stream_options is not None and not self.stream:
            return invalid("stream_options is only allowed with stream: true", param="stream_options")
        return None


TokenIds = list[int]


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    def unsupported(self) -> ServingError | None:
        if self.logprobs:
            return invalid("logprobs is not supported by this server", param="logprobs")
        if self.suffix:
            return invalid("suffix (insertion) is not supported by this server", param="suffix")
        if self.best_of is not None and self.best_of != (self.n or 1):
            return invalid("best_of other than n is not supported by this server", param="best_of")
        return super().unsupported()


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(_Strict):
    type: Literal["text"]


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_INT)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none"] | None = None
    parallel_tool_calls: bool | None = None

    def unsupported(self) -> ServingError | None:
        if self.logprobs or self.top_logprobs:
            return invalid("logprobs is not supported by this server", param="logprobs")
        if self.tools:
            return invalid("tools (function calling) are not supported by this server", param="tools")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            return invalid("give max_completion_tokens or max_tokens, not both", param="max_tokens")
        return super().unsupported()


_UNION_HINTS = {
    "prompt": "prompt must be a string, a list of strings, a list of token ids, or a list of lists of token ids",
    "stop": "stop must be a string or a list of strings",
    "content": "content must be a string or a list of {\"type\": \"text\", \"text\": ...} parts",
}


def _describe(error: dict[str, Any], fields: list[str]) -> ServingError:
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int")))]
    param = ".".join(loc) or None
    kind, last = error["type"], (loc[-1] if loc else "")
    if kind == "json_invalid":
        return invalid(f"the request body is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})")
    if kind == "model_type" and not loc:
        return invalid("the request body must be a JSON object")
    if kind == "extra_forbidden":
        return invalid(f"unknown field {param!r}; known fields: {', '.join(fields)}", param=param)
    if kind == "missing":
        return invalid(f"{param} is required", param=param)
    root = loc[0] if loc else ""
    hint = _UNION_HINTS.get(last) or _UNION_HINTS.get(root)
    if hint and kind.endswith("_type"):
        return invalid(hint, param=param)
    return invalid(f"{param}: {error['msg']}", param=param)


def parse_request(schema: type[_SamplingRequest], raw: bytes) -> _SamplingRequest | ServingError:
    """The request from the HTTP body, or a 400 that names what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return invalid(f"the request body is not valid UTF-8 (byte {e.start}); send JSON encoded as UTF-8")
    try:
        request = schema.model_validate_json(text)
    except ValidationError as e:
        return _describe(e.errors()[0], sorted(schema.model_fields))
    return request.unsupported() or request


# --------------------------------------------------------------------------------------------------
# responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


def usage(*, prompt: int, completion: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )  # fmt: skip


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tnlm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
