"""Every kind of bad request, as raw HTTP, gets a 4xx with an OpenAI-style error body that names the
problem; the server stays up. This server allows 256 tokens in all and 0.05 s per request."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")

from tests.serving.conftest import http, running_server  # noqa: E402

KEY = "k-errors"
CMPL, CHAT = "/v1/completions", "/v1/chat/completions"
OK_CMPL = {"model": "tnl-tiny", "prompt": "Hi", "max_tokens": 4}
OK_CHAT = {"model": "tnl-tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server():
    with running_server("tnl-tiny", "--api-key", KEY, "--max-model-len", "256", "--request-timeout", "0.05") as s:
        yield s


def _check_error(reply, status: int) -> dict:
    assert reply.status == status, reply.body
    error = reply.error
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b'{"model": "tnl-tiny", "prompt": ', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": "tnl-tiny", "prompt": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"model": "tnl-tiny", "prompt": "\\ud800"}', "not valid JSON"),  # a lone surrogate
        (b"", "not valid JSON"),
    ],
    ids=["truncated", "array", "non-utf8", "surrogate", "empty"],
)
def test_bodies_that_are_not_json_requests(server, raw: bytes, fragment: str) -> None:
    error = _check_error(http(server, "POST", CMPL, raw, key=KEY), 400)
    assert fragment in error["message"]


@pytest.mark.parametrize(
    "path, change, param",
    [
        (CMPL, {"temprature": 0.5}, "temprature"),
        (CMPL, {"temperature": "0.5"}, "temperature"),
        (CMPL, {"temperature": 2.5}, "temperature"),
        (CMPL, {"top_p": 0}, "top_p"),
        (CMPL, {"top_p": 1.5}, "top_p"),
        (CMPL, {"max_tokens": 0}, "max_tokens"),
        (CMPL, {"max_tokens": 5000}, "max_tokens"),
        (CMPL, {"n": 0}, "n"),
        (CMPL, {"n": 99}, "n"),
        (CMPL, {"seed": -1}, "seed"),
        (CMPL, {"top_k": -1}, "top_k"),
        (CMPL, {"repetition_penalty": 0}, "repetition_penalty"),
        (CMPL, {"stream": "yes"}, "stream"),
        (CMPL, {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (CMPL, {"stop": [""]}, "stop"),
        (CMPL, {"stop": 5}, "stop"),
        (CMPL, {"prompt": {"text": "x"}}, "prompt"),
        (CMPL, {"prompt": [99999]}, "prompt"),
        (CMPL, {"prompt": ""}, "prompt"),
        (CMPL, {"prompt": []}, "prompt"),
        (CMPL, {"logprobs": 2}, "logprobs"),
        (CMPL, {"suffix": "end"}, "suffix"),
        (CMPL, {"best_of": 3}, "best_of"),
        (CMPL, {"frequency_penalty": 0.5}, "frequency_penalty"),
        (CMPL, {"logit_bias": {"10": 5}}, "logit_bias"),
        (CMPL, {"stream_options": {"include_usage": True}}, "stream_options"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        (CHAT, {"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages.0.name"),
        (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        (CHAT, {"max_completion_tokens": 3}, "max_tokens"),  # both given
        (CHAT, {"response_format": {"type": "json_object"}}, "response_format.type"),
    ],
)
def test_invalid_parameters_name_the_field(server, path: str, change: dict, param: str) -> None:
    body = {**(OK_CMPL if path == CMPL else OK_CHAT), **change}
    error = _check_error(http(server, "POST", path, body, key=KEY), 400)
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_missing_and_unknown_model(server) -> None:
    error = _check_error(http(server, "POST", CMPL, {"prompt": "Hi"}, key=KEY), 400)
    assert error["param"] == "model" and "required" in error["message"]
    error = _check_error(http(server, "POST", CHAT, {**OK_CHAT, "model": "gpt-4"}, key=KEY), 404)
    assert error["code"] == "model_not_found" and "tnl-tiny" in error["message"]


def test_prompts_longer_than_the_model_allows(server) -> None:
    error = _check_error(http(server, "POST", CMPL, {**OK_CMPL, "prompt": "x" * 300}, key=KEY), 400)
    assert error["code"] == "context_length_exceeded" and "256" in error["message"]
    error = _check_error(http(server, "POST", CMPL, {**OK_CMPL, "prompt": "x" * 200, "max_tokens": 100}, key=KEY), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    long_chat = {**OK_CHAT, "messages": [{"role": "user", "content": "y" * 300}]}
    assert _check_error(http(server, "POST", CHAT, long_chat, key=KEY), 400)["code"] == "context_length_exceeded"


def test_a_huge_body_is_refused_without_reading_it_all(server) -> None:
    body = json.dumps({**OK_CMPL, "prompt": "z" * (9 * 2**20)}).encode()
    assert _check_error(http(server, "POST", CMPL, body, key=KEY), 413)["code"] == "request_too_large"


def test_api_key(server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}):
        error = _check_error(http(server, "POST", CMPL, OK_CMPL, headers=headers), 401)
        assert error["code"] == "invalid_api_key"
    assert http(server, "GET", "/v1/models").status == 401
    assert http(server, "GET", "/metrics").status == 401
    assert http(server, "GET", "/health").status == 200  # liveness needs no key
    assert http(server, "GET", "/v1/models", key=KEY).json()["data"][0]["id"] == "tnl-tiny"


def test_unknown_routes_and_methods(server) -> None:
    assert _check_error(http(server, "GET", "/v1/nothing", key=KEY), 404)["code"] == "not_found"
    assert "not allowed" in _check_error(http(server, "GET", CMPL, key=KEY), 405)["message"]


def test_a_request_that_runs_too_long_times_out(server) -> None:
    body = {**OK_CMPL, "max_tokens": 240, "temperature": 0}
    error = _check_error(http(server, "POST", CMPL, body, key=KEY), 408)
    assert error["code"] == "request_timeout" and "0.05 s" in error["message"]
    streamed = http(server, "POST", CMPL, {**body, "stream": True}, key=KEY)  # headers sent: the error is an event
    assert streamed.status == 200
    events = [line.removeprefix(b"data: ") for line in streamed.body.splitlines() if line.startswith(b"data: ")]
    assert json.loads(events[-1])["error"]["code"] == "request_timeout"


def test_the_openai_client_sees_clear_errors(server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tnl-tiny", prompt="Hi", temperature=9)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.v1, api_key="bad", max_retries=0).models.list()


def test_the_server_is_still_up(server) -> None:
    assert server.proc.poll() is None
    assert http(server, "GET", "/health").json()["status"] == "ok"
    assert not any("Traceback" in line for line in server.stderr)
