"""The real server (tnl-tiny) driven by the official openai client: completions and chat, streaming and
not, concurrent clients, a client that disconnects, a conversation that continues its kept state.

Expected texts come from tnlm's single-request engine (`generate`) on the same weights: a request
served in a batch with others must give exactly the greedy text it gets alone.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch

openai = pytest.importorskip("openai")

from tests.serving.conftest import http, metric, open_stream, running_server  # noqa: E402
from tnlm.chat_template import END_MARKER, render_chat  # noqa: E402
from tnlm.generation import ByteTokenizer, chat_eos_ids, generate  # noqa: E402
from tnlm.models.registry import create_model  # noqa: E402

KEY = "test-key-123"
TOK = ByteTokenizer()
# a generation that outlasts any client's patience here: tnl-tiny's step takes well under a millisecond, so
# 4000 tokens can finish within the 2 s a test client waits (it did, once the layers ran as one C call)
LONG = 1_000_000
PROMPTS = ["The quick brown fox", "Hi", "Once upon a time, in a land far away", "0123456789" * 5, "héllo wörld"]


@pytest.fixture(scope="module")
def server():
    with running_server("tnl-tiny", "--api-key", KEY, "--max-batch", "8", "--max-queue", "4", "--max-tokens-limit", str(LONG)) as s:
        yield s


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return create_model("tnl-tiny", seed=0).eval()


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=120)


def _alone(model, prompt: str, n: int) -> str:
    return generate(model, TOK, [prompt], max_new_tokens=n, eos_token_ids=[TOK.eos_token_id]).texts[0]


def _chat_alone(model, messages: list[dict], n: int) -> str:
    text = render_chat(messages, add_generation_prompt=True)
    out = generate(model, TOK, [text], max_new_tokens=n, stop=[END_MARKER], eos_token_ids=chat_eos_ids(TOK))
    return out.texts[0]


def _metric(server, name: str) -> float:
    return metric(server, name, key=KEY)


def test_models_and_health(server, client) -> None:
    assert server.url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
    assert [m.id for m in client.models.list().data] == ["tnl-tiny"]
    assert http(server, "GET", "/health").json()["status"] == "ok"  # no key needed


def test_completion_matches_the_engine_streaming_or_not(client, model) -> None:
    prompt = PROMPTS[0]
    out = client.completions.create(model="tnl-tiny", prompt=prompt, max_tokens=20, temperature=0)
    assert out.choices[0].text == _alone(model, prompt, 20)
    assert out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(TOK.encode(prompt)), 20)
    pieces = list(client.completions.create(model="tnl-tiny", prompt=prompt, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].text for c in pieces if c.choices)
    assert text == out.choices[0].text
    assert [c.choices[0].finish_reason for c in pieces if c.choices][-1] == "length"
    assert pieces[-1].usage.completion_tokens == 20


def test_chat_matches_the_engine_streaming_or_not(client, model) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    out = client.chat.completions.create(model="tnl-tiny", messages=messages, max_tokens=24, temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == _chat_alone(model, messages, 24)
    assert out.usage.prompt_tokens == len(TOK.encode(render_chat(messages, add_generation_prompt=True)))
    chunks = list(client.chat.completions.create(model="tnl-tiny", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == out.choices[0].finish_reason


def test_concurrent_clients_each_get_their_own_greedy_text(server, model) -> None:
    """Eight requests at once, streaming and not, of different lengths: each equals its single run
    (no text crosses from one request into another)."""
    budgets = [30, 7, 22, 15, 11, 26, 9, 18]
    prompts = [PROMPTS[i % len(PROMPTS)] + f" #{i}" for i in range(len(budgets))]

    async def one(aclient, i: int) -> str:
        kwargs = dict(model="tnl-tiny", prompt=prompts[i], max_tokens=budgets[i], temperature=0)
        if i % 2:
            out = await aclient.completions.create(**kwargs)
            return out.choices[0].text
        stream = await aclient.completions.create(**kwargs, stream=True)
        return "".join([c.choices[0].text async for c in stream])

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=120) as aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(len(budgets))))

    got = asyncio.run(main())
    assert got == [_alone(model, p, n) for p, n in zip(prompts, budgets)]


def test_a_conversation_continues_its_kept_state(server, client, model) -> None:
    """Each turn reports the earlier turns as cached prompt tokens, and its reply is what a fresh run
    over the whole conversation gives."""
    messages = [{"role": "user", "content": "Tell me about foxes."}]
    previous_tokens = 0
    for turn in range(3):
        out = client.chat.completions.create(model="tnl-tiny", messages=messages, max_tokens=12, temperature=0)
        reply = out.choices[0].message.content
        assert reply == _chat_alone(model, messages, 12)
        cached = out.usage.prompt_tokens_details.cached_tokens
        if turn == 0:
            assert cached == 0
        else:  # the previous prompt and every reply token the state consumed
            assert previous_tokens <= cached < out.usage.prompt_tokens
        previous_tokens = out.usage.prompt_tokens + out.usage.completion_tokens - 1
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"And turn {turn}?"}]
    assert _metric(server, "tnlm_state_cache_hits_total") >= 2


def test_n_choices_and_seeds(client) -> None:
    kwargs = dict(model="tnl-tiny", prompt="Pick:", max_tokens=12, temperature=1.0, n=3, seed=11)
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1  # different seeds per choice
    if all(c.finish_reason == "length" for c in a.choices):
        assert a.usage.completion_tokens == 3 * 12


def test_a_client_that_disconnects_stops_its_generation(server, client) -> None:
    before = _metric(server, "tnlm_requests_cancelled_total")
    stream = client.completions.create(model="tnl-tiny", prompt="Long story:", max_tokens=LONG, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    _assert_cancelled_and_freed(server, before)


def test_a_client_that_gives_up_waiting_for_a_whole_reply_stops_its_generation(server) -> None:
    """Not streamed: the client's own timeout closes the connection and the server notices."""
    before = _metric(server, "tnlm_requests_cancelled_total")
    impatient = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=2)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model="tnl-tiny", prompt="Long story:", max_tokens=LONG, temperature=0)
    _assert_cancelled_and_freed(server, before)


def _assert_cancelled_and_freed(server, before: float) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _metric(server, "tnlm_requests_cancelled_total") > before and _metric(server, "tnlm_running_sequences") == 0:
            break
        time.sleep(0.2)
    assert _metric(server, "tnlm_requests_cancelled_total") == before + 1
    assert _metric(server, "tnlm_running_sequences") == 0
    assert _metric(server, "tnlm_batch_state_bytes") == 0


def test_metrics_report_traffic(server, client) -> None:
    messages = [{"role": "user", "content": "One"}]
    first = client.chat.completions.create(model="tnl-tiny", messages=messages, max_tokens=5, temperature=0)
    messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Two"}]
    client.chat.completions.create(model="tnl-tiny", messages=messages, max_tokens=5, temperature=0)
    for name in ("tnlm_generated_tokens_total", "tnlm_prompt_tokens_total", "tnlm_time_to_first_token_seconds_count",
                 "tnlm_state_cache_bytes", "tnlm_state_cache_hits_total", "process_resident_memory_bytes"):  # fmt: skip
        assert _metric(server, name) > 0, name
    assert _metric(server, "tnlm_queue_length") == 0


def test_a_full_queue_answers_503_with_retry_after(server) -> None:
    """8 running + 4 waiting fill this server; more requests are refused at once, not queued."""
    body = {"model": "tnl-tiny", "prompt": "Go:", "max_tokens": LONG, "temperature": 0, "stream": True}
    opened, statuses = [], []
    try:
        while 503 not in statuses and len(statuses) < 40:
            conn, response = open_stream(server, body, key=KEY)
            opened.append(conn)
            statuses.append(response.status)
            if response.status == 503:
                assert response.getheader("Retry-After") == "1"
                assert json.loads(response.read())["error"]["code"] == "queue_full"
    finally:
        for conn in opened:
            conn.close()
    assert statuses[-1] == 503 and statuses.count(200) >= 12  # 8 run and 4 wait before any refusal
