"""The server with a KV-cache family (transformer-tiny): batched requests give their single-run greedy
text, a conversation and a shared system prompt reuse kept KV caches, and Ctrl-C stops cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
import torch

openai = pytest.importorskip("openai")

from tests.serving.conftest import open_stream, running_server  # noqa: E402
from tnlm.chat_template import END_MARKER, render_chat  # noqa: E402
from tnlm.generation import ByteTokenizer, chat_eos_ids, generate  # noqa: E402
from tnlm.models.registry import create_model  # noqa: E402

TOK = ByteTokenizer()
NAME = "transformer-tiny"


KEY = "from-the-environment"


@pytest.fixture(scope="module")
def server():
    with running_server(NAME, env={"TNLM_API_KEY": KEY}) as s:
        yield s


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return create_model(NAME, seed=0).eval()


def _chat_alone(model, messages: list[dict], n: int) -> str:
    text = render_chat(messages, add_generation_prompt=True)
    return generate(model, TOK, [text], max_new_tokens=n, stop=[END_MARKER], eos_token_ids=chat_eos_ids(TOK)).texts[0]


def test_concurrent_requests_give_their_single_run_text(server, model) -> None:
    prompts = ["A long prompt about many things, " * 3, "Short", "Medium length prompt here", "x"]
    budgets = [9, 25, 14, 20]

    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=120) as client:
            outs = await asyncio.gather(*(
                client.completions.create(model=NAME, prompt=p, max_tokens=n, temperature=0) for p, n in zip(prompts, budgets)
            ))  # fmt: skip
        return [o.choices[0].text for o in outs]

    expected = [generate(model, TOK, [p], max_new_tokens=n, eos_token_ids=[2]).texts[0] for p, n in zip(prompts, budgets)]
    assert asyncio.run(main()) == expected


def test_kv_caches_are_reused_for_a_conversation_and_a_shared_system_prompt(server, model) -> None:
    with pytest.raises(openai.AuthenticationError):  # the key came from TNLM_API_KEY
        openai.OpenAI(base_url=server.v1, api_key="none", max_retries=0).models.list()
    client = openai.OpenAI(base_url=server.v1, api_key=KEY, max_retries=0, timeout=120)
    system = {"role": "system", "content": "You are a careful assistant who answers in one short sentence."}
    messages = [system, {"role": "user", "content": "Where do foxes live?"}]
    first = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Why?"}]
    second = client.chat.completions.create(model=NAME, messages=messages, max_tokens=10, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    assert second.choices[0].message.content == _chat_alone(model, messages, 10)
    other = [system, {"role": "user", "content": "Something else entirely"}]
    third = client.chat.completions.create(model=NAME, messages=other, max_tokens=10, temperature=0)
    shared = len(TOK.encode(render_chat([system])))
    assert third.usage.prompt_tokens_details.cached_tokens >= shared  # the system prompt's KV, cut from a longer entry
    assert third.choices[0].message.content == _chat_alone(model, other, 10)


def test_ctrl_c_stops_the_server_cleanly_even_mid_stream() -> None:
    with running_server(NAME, env={"TNLM_API_KEY": ""}) as s:
        # greedy: this model's 2000 tokens after "Go" hold no EOS, so the stream is still running when the
        # server stops (at the default temperature 1 a sampled EOS could end it first)
        body = {"model": NAME, "prompt": "Go", "max_tokens": 2000, "stream": True, "temperature": 0}
        conn, response = open_stream(s, body, key=None)
        assert response.status == 200
        response.readline()  # generation is under way
        rest: list[bytes] = []
        reader = threading.Thread(target=lambda: rest.append(response.read()))  # the client keeps reading
        reader.start()
        start = time.monotonic()
        assert s.stop(signal.SIGINT, timeout=60) == 130
        assert time.monotonic() - start < 30
        reader.join(30)
        conn.close()
        last = rest[0].decode().strip().splitlines()[-1]  # a complete response whose last event says why
        assert json.loads(last.removeprefix("data: "))["error"]["code"] == "unavailable", last
        time.sleep(0.5)  # the stderr reader catches up
        assert s.stderr[-1] == "interrupted: server stopped"
        assert not any("Traceback" in line or "ERROR" in line for line in s.stderr), s.stderr
