"""The scheduler in-process, for every family: requests that arrive while others decode join the
batch and each gets the greedy text it gets alone; cancellation and timeouts free the batch; a
failing step costs its requests, not the server."""

from __future__ import annotations

import asyncio
import functools

import pytest
import torch

from tnlm.generation import ByteTokenizer, SamplingParams, generate
from tnlm.models.registry import create_model, preset_names
from tnlm.serving.metrics import ServerMetrics
from tnlm.serving.scheduler import Done, Failed, Finished, Job, Piece, Scheduler, Ticket
from tnlm.serving.state_cache import StateCache

TOK = ByteTokenizer()
GREEDY = SamplingParams(temperature=0.0)
TINY = [p for p in preset_names() if p.endswith("-tiny")]


@functools.lru_cache(maxsize=None)
def _model(name: str):
    torch.set_num_threads(1)
    return create_model(name, seed=0).eval()


def _scheduler(model, **kw) -> Scheduler:
    kw = {"max_batch": 8, "max_queue": 8, "prefill_chunk": 16, **kw}
    return Scheduler(model, TOK, metrics=ServerMetrics(), state_cache=StateCache(2**28), **kw)


async def _collect(ticket: Ticket) -> tuple[str, str | None, object]:
    text, reason = [], None
    while True:
        event = await ticket.events.get()
        if isinstance(event, Piece):
            text.append(event.text)
        elif isinstance(event, Finished):
            reason = event.reason
        elif isinstance(event, (Done, Failed)):
            return "".join(text), reason, event


def _serve(scheduler: Scheduler, jobs: list[Job], delays: list[float]) -> list[tuple[str, str | None, object]]:
    async def one(job: Job, delay: float):
        await asyncio.sleep(delay)
        ticket = Ticket(job, events=asyncio.Queue())
        assert scheduler.submit(ticket) is None
        return await asyncio.wait_for(_collect(ticket), timeout=120)  # a lost request fails the test, not hangs it

    async def main():
        return await asyncio.gather(*(one(j, d) for j, d in zip(jobs, delays)))

    scheduler.start()
    try:
        return asyncio.run(main())
    finally:
        scheduler.stop()


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("reference", [False, True], ids=["fast-step", "reference-step"])
def test_requests_arriving_at_any_time_get_their_single_run_text(name: str, reference: bool) -> None:
    model = _model(name)
    prompts = ["The quick brown fox", "Hi", "A much longer prompt that needs several prefill chunks to go in.", "é" * 7]
    budgets, delays = [30, 12, 20, 25], [0.0, 0.0, 0.05, 0.1]
    jobs = [Job(prompt=TOK.encode(p), sampling=GREEDY, max_tokens=n, eos_ids=frozenset([2])) for p, n in zip(prompts, budgets)]
    scheduler = _scheduler(model, reference=reference)
    assert (scheduler._batch._fast is None) == reference  # `tnlm serve --reference` decodes with the forward
    results = _serve(scheduler, jobs, delays)
    for (text, reason, done), prompt, n in zip(results, prompts, budgets):
        alone = generate(model, TOK, [prompt], max_new_tokens=n, eos_token_ids=[2]).sequences[0]
        assert text == alone.text
        assert isinstance(done, Done) and done.prompt_tokens == len(TOK.encode(prompt))
        assert reason == ("length" if alone.finish_reason == "length" else "stop")


def test_seeded_sampling_does_not_depend_on_the_batch() -> None:
    model = _model("tnl-tiny")
    hot = SamplingParams(temperature=1.0, top_k=50)
    job = Job(prompt=TOK.encode("Seeds"), sampling=hot, max_tokens=15, seed=5)
    alone = _serve(_scheduler(model), [job], [0.0])[0][0]
    others = [Job(prompt=TOK.encode(f"other {i}"), sampling=hot, max_tokens=20, seed=i) for i in range(3)]
    crowded = _serve(_scheduler(model), [*others, job], [0.0, 0.0, 0.0, 0.02])[-1][0]
    assert alone == crowded


def test_cancelled_and_timed_out_requests_leave_and_free_their_state() -> None:
    model = _model("transformer-tiny")
    scheduler = _scheduler(model)

    async def main():
        long = Ticket(Job(prompt=TOK.encode("long"), sampling=GREEDY, max_tokens=1000), events=asyncio.Queue())
        late = Ticket(Job(prompt=TOK.encode("late"), sampling=GREEDY, max_tokens=1000, timeout_s=0.3), events=asyncio.Queue())
        for t in (long, late):
            assert scheduler.submit(t) is None
        await long.events.get()  # a first piece: it runs
        scheduler.cancel(long)
        outcome = await _collect(late)
        for _ in range(100):
            if scheduler.metrics.running._value.get() == 0:
                break
            await asyncio.sleep(0.05)
        return outcome

    scheduler.start()
    try:
        _, _, event = asyncio.run(main())
    finally:
        scheduler.stop()
    assert isinstance(event, Failed) and event.error.status == 408
    assert len(scheduler._batch) == 0 and scheduler._batch.nbytes() == 0
    assert scheduler.metrics.cancelled._value.get() == 1 and scheduler.metrics.timeouts._value.get() == 1


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(monkeypatch) -> None:
    model = _model("tnl-tiny")
    scheduler = _scheduler(model)
    real_step, calls = scheduler._batch.step, {"n": 0}

    def flaky(tokens):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real_step(tokens)

    monkeypatch.setattr(scheduler._batch, "step", flaky)
    job = Job(prompt=TOK.encode("Hello"), sampling=GREEDY, max_tokens=10, eos_ids=frozenset([2]))
    first = _serve(scheduler, [job], [0.0])[0][2]
    assert isinstance(first, Failed) and first.error.status == 500
    scheduler = _scheduler(model)
    text, _, done = _serve(scheduler, [job], [0.0])[0]
    assert isinstance(done, Done)
    assert text == generate(model, TOK, ["Hello"], max_new_tokens=10, eos_token_ids=[2]).texts[0]


@pytest.mark.parametrize("broken", ["cache.lookup", "_reap"])
def test_an_unexpected_error_in_an_iteration_costs_requests_not_the_server(monkeypatch, broken: str) -> None:
    model = _model("tnl-tiny")
    scheduler = _scheduler(model)
    owner, name = (scheduler.cache, "lookup") if broken == "cache.lookup" else (scheduler, "_reap")
    real, calls = getattr(owner, name), {"n": 0}

    def broken_once(*args):
        calls["n"] += 1
        if calls["n"] == (1 if broken == "cache.lookup" else 3):
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(owner, name, broken_once)
    job = Job(prompt=TOK.encode("Hello"), sampling=GREEDY, max_tokens=5, eos_ids=frozenset([2]))
    first, second = _serve(scheduler, [job, job], [0.0, 0.3])
    assert isinstance(first[2], Failed) and first[2].error.status == 500
    assert isinstance(second[2], Done)


def test_the_first_token_is_announced_even_when_its_text_is_held_back() -> None:
    """transformer-tiny answers "long" with bytes that are no UTF-8 yet: a client still learns at once
    that generation has started (an empty piece), and the text arrives within a few tokens."""
    model = _model("transformer-tiny")
    scheduler = _scheduler(model)

    async def main() -> list:
        ticket = Ticket(Job(prompt=TOK.encode("long"), sampling=GREEDY, max_tokens=40), events=asyncio.Queue())
        assert scheduler.submit(ticket) is None
        events = []
        while not events or not isinstance(events[-1], (Done, Failed)):
            events.append(await asyncio.wait_for(ticket.events.get(), timeout=120))
        return events

    scheduler.start()
    try:
        events = asyncio.run(main())
    finally:
        scheduler.stop()
    pieces = [e for e in events if isinstance(e, Piece)]
    assert events[0] == Piece(0, "")
    assert len(pieces) > 2  # not everything at the end
    alone = generate(model, TOK, ["long"], max_new_tokens=40, eos_token_ids=[]).texts[0]
    assert "".join(p.text for p in pieces) == alone


@pytest.mark.parametrize("name", ["tnl-tiny", "transformer-tiny"])
def test_conversation_turns_and_a_regenerated_reply_continue_kept_states(name: str) -> None:
    """Each turn feeds only what follows the previous prompt (even when the reply's text tokenizes
    differently from how it was generated), a regenerated reply (the same prompt again) feeds one
    token, every reply is the single-run text, and a recurrent conversation keeps two states."""
    model = _model(name)
    scheduler = _scheduler(model, prefill_chunk=64)

    async def ask(prompt: list[int]) -> tuple[str, Done]:
        ticket = Ticket(Job(prompt=prompt, sampling=GREEDY, max_tokens=12), events=asyncio.Queue())
        assert scheduler.submit(ticket) is None
        text, _, done = await asyncio.wait_for(_collect(ticket), timeout=120)
        assert isinstance(done, Done)
        return text, done

    async def main() -> list[tuple[list[int], str, Done]]:
        prompt, out = TOK.encode("User: tell me a story\nBot:"), []
        for turn in range(4):
            text, done = await ask(prompt)
            out.append((prompt, text, done))
            prompt = prompt + TOK.encode(f"{text}\nUser: and then {turn}?\nBot:")
        last = out[-1][0]
        out.append((last, *await ask(last)))  # regenerate the last reply
        return out

    scheduler.start()
    try:
        turns = asyncio.run(main())
    finally:
        scheduler.stop()
    for i, (prompt, text, done) in enumerate(turns):
        assert text == generate(model, TOK, [TOK.decode(prompt)], max_new_tokens=12, eos_token_ids=[]).texts[0]
        if 0 < i < len(turns) - 1:
            assert done.cached_tokens >= len(turns[i - 1][0]) - 1
    assert turns[0][2].cached_tokens == 0
    assert turns[-1][2].cached_tokens == len(turns[-1][0]) - 1
    if name == "tnl-tiny":
        assert len(scheduler.cache) == 2  # the last prompt (one token short) and the last reply's end


def test_serve_reference_flag_reaches_the_scheduler(monkeypatch) -> None:
    """`tnlm serve --reference` -> ServerOptions(reference=True) -> the scheduler's batch uses the forward."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'tnlm[serve]'")
    from typer.testing import CliRunner

    from tnlm.cli.main import app
    from tnlm.serving import server
    from tnlm.serving.server import ServerOptions, build_app

    seen = []
    monkeypatch.setattr(server, "run", lambda options, sock: (seen.append(options.reference), sock.close()))
    for flags in ([], ["--reference"]):
        result = CliRunner().invoke(app, ["serve", "tnl-tiny", "--port", "0", *flags])
        assert result.exit_code == 0, result.output
    assert seen == [False, True]
    for reference in (False, True):
        _, scheduler = build_app(ServerOptions(model="tnl-tiny", reference=reference))
        assert scheduler.reference is reference and (scheduler._batch._fast is None) is reference


def test_a_step_hands_its_events_to_the_event_loop_in_one_call() -> None:
    """Every hand-off wakes the event loop (and gives it the GIL): a step of 4 rows makes one, not 4."""
    model = _model("tnl-tiny")
    scheduler = _scheduler(model)
    calls, events = [], []

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe

        def counting(callback, *args):
            calls.append(len(args[0]) if args and isinstance(args[0], list) else 1)
            return real(callback, *args)

        loop.call_soon_threadsafe = counting
        jobs = [Job(prompt=TOK.encode(f"row {i}"), sampling=GREEDY, max_tokens=20) for i in range(4)]
        tickets = [Ticket(job, events=asyncio.Queue()) for job in jobs]
        for t in tickets:
            assert scheduler.submit(t) is None
        for t in tickets:
            while not isinstance(event := await asyncio.wait_for(t.events.get(), timeout=120), Done):
                events.append(event)

    scheduler.start()
    try:
        asyncio.run(main())
    finally:
        scheduler.stop()
    pieces = [e for e in events if isinstance(e, Piece)]
    assert len(pieces) >= 4 * 10
    assert sum(calls) >= len(events)  # every event went through a hand-off
    assert len(calls) <= len(pieces) / 3  # ~20 steps of 4 rows (and 4 prefills), not one call per piece


def test_the_outbox_keeps_order_per_loop_and_cancels_tickets_of_a_closed_loop() -> None:
    from tnlm.serving.scheduler import Outbox

    async def make() -> Ticket:
        return Ticket(Job(prompt=[1], sampling=GREEDY, max_tokens=1), events=asyncio.Queue())

    open_loop, closed_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    a, b = open_loop.run_until_complete(make()), closed_loop.run_until_complete(make())
    closed_loop.close()
    outbox = Outbox()
    for i in range(3):
        outbox.put(a, Piece(0, str(i)))
        outbox.put(b, Piece(0, str(i)))
    outbox.flush()
    assert len(outbox) == 0 and b.cancelled and not a.cancelled
    open_loop.run_until_complete(asyncio.sleep(0))
    assert [a.events.get_nowait().text for _ in range(3)] == ["0", "1", "2"]
    open_loop.close()


def test_the_tokens_per_second_gauge_counts_only_the_window(monkeypatch) -> None:
    import tnlm.serving.metrics as M

    clock = {"t": 100.0}
    monkeypatch.setattr(M.time, "monotonic", lambda: clock["t"])
    metrics = ServerMetrics()
    for tokens in (5, 7, 3):
        metrics.step(tokens=tokens)
        clock["t"] += 4.0
    assert metrics.tokens_per_s._value.get() == pytest.approx(15 / M._RATE_WINDOW_S)  # t=108: all three
    metrics.step(tokens=1)  # t=112: the first (t=100) has left the 10 s window
    assert metrics.tokens_per_s._value.get() == pytest.approx(11 / M._RATE_WINDOW_S)
    clock["t"] += 30.0
    metrics.set_load(queue=0, running=0, prefilling=0, batch_bytes=0, cache=StateCache(1))
    assert metrics.tokens_per_s._value.get() == 0


@pytest.mark.parametrize("n", [1, 3])
def test_a_recurrent_prompt_is_fed_in_one_forward_call_and_its_last_token_by_the_batch_step(monkeypatch, n: int) -> None:
    """TransNormer's state is kept one token before the prompt's end; the prefill stops there and the
    batch's step feeds the last token (no second forward call for one token). The text is still the
    single-run text, each choice's seeded draws are those of a run alone, and the kept state serves
    a regenerated reply."""
    import tnlm.serving.scheduler as scheduler_module

    model = _model("tnl-tiny")
    scheduler = _scheduler(model, prefill_chunk=64)
    assert not scheduler._rewindable()  # (its one-token probe runs before the count starts)
    fed: list[int] = []
    real_feed = scheduler_module.feed
    monkeypatch.setattr(scheduler_module, "feed", lambda m, state, tokens: fed.append(len(tokens)) or real_feed(m, state, tokens))
    prompt = TOK.encode("A prompt of some thirty tokens, more or less.")
    sampling = GREEDY if n == 1 else SamplingParams(temperature=1.0, top_k=20)
    job = Job(prompt=prompt, sampling=sampling, max_tokens=12, seed=3, n=n)

    async def main():
        out = []
        for _ in range(2):  # the second time: a regenerated reply from the kept state
            ticket = Ticket(job, events=asyncio.Queue())
            assert scheduler.submit(ticket) is None
            texts, done = {}, None
            while not isinstance(done, Done):
                done = await asyncio.wait_for(ticket.events.get(), timeout=120)
                if isinstance(done, Piece):
                    texts[done.choice] = texts.get(done.choice, "") + done.text
            out.append((texts, done))
        return out

    scheduler.start()
    try:
        (first, done1), (again, done2) = asyncio.run(main())
    finally:
        scheduler.stop()
    assert fed == [len(prompt) - 1]  # one forward call; the regenerated reply feeds nothing before the step
    assert done1.cached_tokens == 0 and done2.cached_tokens == len(prompt) - 1
    assert first == again
    if n == 1:
        assert first[0] == generate(model, TOK, [TOK.decode(prompt)], max_new_tokens=12, eos_token_ids=[]).texts[0]
    else:
        alone = [_serve(_scheduler(model), [Job(prompt=prompt, sampling=sampling, max_tokens=12, seed=3 + i)], [0.0])[0][0]
                 for i in range(n)]  # fmt: skip
        assert [first[i] for i in range(n)] == alone
