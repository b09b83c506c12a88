"""The serving logic between the HTTP routes and the scheduler.

Every public method takes a validated request and returns either a `ServingError` (a value, never
an exception) or the response: a JSON-ready dict, or an async iterator of server-sent-event payloads
for `stream: true`. Limits are checked here, before any work: the prompt must fit the model, the
parameters must be in range, and a full queue answers at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from torch import nn

from tnlm.chat_template import END_MARKER
from tnlm.errors import ConfigError
from tnlm.generation.chat import chat_eos_ids
from tnlm.generation.sampling import SamplingParams
from tnlm.generation.tokenizer import TextTokenizer
from tnlm.serving import schemas as S
from tnlm.serving.prompts import ChatPrompts
from tnlm.serving.scheduler import Done, Event, Failed, Finished, Job, Piece, Scheduler, Ticket

Disconnected = Callable[[], Awaitable[bool]]
SSE_DONE = "[DONE]"
_CLIENT_GONE = S.ServingError(499, "the client closed the request", type="client_closed")


@dataclass(frozen=True)
class ServeSettings:
    model_id: str
    max_model_len: int | None = None  # prompt + max_tokens; None: no limit (a recurrent model)
    max_tokens_limit: int = 4096  # the largest max_tokens a request may ask for
    completion_default_tokens: int = 16  # the OpenAI default for /v1/completions
    request_timeout_s: float = 600.0
    max_batch: int = 32


@dataclass
class _Choices:
    """What a non-streaming request collects."""

    texts: dict[int, list[str]]
    reasons: dict[int, str]
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    def usage(self) -> S.Usage:
        return S.usage(prompt=self.prompt_tokens, completion=self.completion_tokens, cached=self.cached_tokens)


class Service:
    def __init__(self, *, model: nn.Module, tokenizer: TextTokenizer, scheduler: Scheduler, settings: ServeSettings) -> None:
        self.model, self.tokenizer, self.scheduler, self.settings = model, tokenizer, scheduler, settings
        self.vocab_size = int(model.config.vocab_size)
        self.created = S.now()
        self.chat_prompt = ChatPrompts(tokenizer)  # a conversation's earlier turns are not encoded again

    def models(self) -> dict:
        return S.ModelList(data=[S.ModelCard(id=self.settings.model_id, created=self.created)]).model_dump()

    def health(self) -> dict | S.ServingError:
        if not self.scheduler.alive:
            return S.ServingError(503, "the scheduler thread is not running", type="server_error")
        return {"status": "ok", "model": self.settings.model_id}

    # ---- request -> jobs

    def _check_model(self, name: str) -> S.ServingError | None:
        if name != self.settings.model_id:
            return S.ServingError(
                404, f"model {name!r} does not exist; this server serves {self.settings.model_id!r} (see /v1/models)",
                param="model", code="model_not_found",
            )  # fmt: skip
        return None

    def _max_tokens(self, asked: int | None, prompt_len: int, *, default: int | None, param: str) -> int | S.ServingError:
        limit, room = self.settings.max_tokens_limit, None
        if self.settings.max_model_len is not None:
            room = self.settings.max_model_len - prompt_len
            if room < 1:
                return S.invalid(
                    f"the prompt has {prompt_len} tokens; this model allows {self.settings.max_model_len} "
                    "tokens in all (prompt + completion); shorten the prompt", param=param, code="context_length_exceeded",
                )  # fmt: skip
        if asked is None:
            return min(x for x in (default, limit, room) if x is not None)
        if asked > limit:
            return S.invalid(f"max_tokens is {asked}; this server allows at most {limit}", param="max_tokens")
        if room is not None and asked > room:
            return S.invalid(
                f"the prompt ({prompt_len} tokens) + max_tokens ({asked}) exceeds this model's "
                f"{self.settings.max_model_len} tokens; shorten the prompt or lower max_tokens",
                param="max_tokens", code="context_length_exceeded",
            )  # fmt: skip
        return asked

    def _sampling(self, req: S._SamplingRequest) -> SamplingParams | S.ServingError:
        n = req.n or 1
        if n > self.settings.max_batch:
            return S.invalid(f"n is {n}; this server runs at most {self.settings.max_batch} sequences at once", param="n")
        try:
            return SamplingParams(
                temperature=1.0 if req.temperature is None else req.temperature, top_k=req.top_k or 0,
                top_p=1.0 if req.top_p is None else req.top_p,
                repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            )  # fmt: skip
        except ConfigError as e:
            return S.invalid(str(e))

    def _job(self, req: S._SamplingRequest, prompt: list[int], *, max_tokens: int, sampling: SamplingParams,
             stop: list[str], eos: list[int]) -> Job:  # fmt: skip
        return Job(
            prompt=prompt, sampling=sampling, max_tokens=max_tokens, stop=tuple(stop), eos_ids=frozenset(eos),
            seed=req.seed, n=req.n or 1, timeout_s=self.settings.request_timeout_s,
        )  # fmt: skip

    def _completion_prompts(self, req: S.CompletionRequest) -> list[list[int]] | S.ServingError:
        p = req.prompt
        if isinstance(p, str) or (p and all(isinstance(x, str) for x in p)):
            texts = [p] if isinstance(p, str) else p
            prompts = [self.tokenizer.encode(t) for t in texts]
        else:
            prompts = [p] if p and all(isinstance(x, int) for x in p) else list(p)
            bad = [t for ids in prompts for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                return S.invalid(f"token id {bad[0]} is outside this model's vocabulary [0, {self.vocab_size})", param="prompt")
        if not prompts or any(not ids for ids in prompts):
            return S.invalid("the prompt is empty; give at least one token of text", param="prompt")
        return prompts

    def _completion_jobs(self, req: S.CompletionRequest) -> list[Job] | S.ServingError:
        error = self._check_model(req.model)
        prompts = error or self._completion_prompts(req)
        sampling = prompts if isinstance(prompts, S.ServingError) else self._sampling(req)
        if isinstance(sampling, S.ServingError):
            return sampling
        eos = [] if self.tokenizer.eos_token_id is None else [self.tokenizer.eos_token_id]
        jobs = []
        for ids in prompts:
            max_tokens = self._max_tokens(req.max_tokens, len(ids), default=self.settings.completion_default_tokens,
                                          param="prompt")
            if isinstance(max_tokens, S.ServingError):
                return max_tokens
            jobs.append(self._job(req, ids, max_tokens=max_tokens, sampling=sampling, stop=req.stop_list(), eos=eos))
        return jobs

    def _chat_job(self, req: S.ChatCompletionRequest) -> Job | S.ServingError:
        error = self._check_model(req.model)
        sampling = error or self._sampling(req)
        if isinstance(sampling, S.ServingError):
            return sampling
        try:
            prompt = self.chat_prompt([(m.role, m.text()) for m in req.messages])
        except ConfigError as e:  # a model whose tokenizer lacks the chat markers
            return S.invalid(f"this model cannot chat: {e}; use /v1/completions", param="messages")
        asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        max_tokens = self._max_tokens(asked, len(prompt), default=None, param="messages")
        if isinstance(max_tokens, S.ServingError):
            return max_tokens
        stop = [END_MARKER, *req.stop_list()]
        return self._job(req, prompt, max_tokens=max_tokens, sampling=sampling, stop=stop, eos=chat_eos_ids(self.tokenizer))

    # ---- jobs -> events

    def _submit(self, jobs: list[Job]) -> tuple[list[Ticket], asyncio.Queue] | S.ServingError:
        events: asyncio.Queue = asyncio.Queue()
        tickets: list[Ticket] = []
        for i, job in enumerate(jobs):
            ticket = Ticket(job, events=events, first_choice=i * job.n)
            error = self.scheduler.submit(ticket)
            if error is not None:
                for t in tickets:
                    self.scheduler.cancel(t)
                return error
            tickets.append(ticket)
        return tickets, events

    async def _events(self, tickets: list[Ticket], events: asyncio.Queue) -> AsyncIterator[Event]:
        """The tickets' events until all are done or one fails; an early exit (the client went away,
        an error) cancels whatever still runs."""
        pending = len(tickets)
        try:
            while pending:
                for event in _merged([await events.get(), *_ready(events)]):
                    yield event
                    if isinstance(event, Failed):
                        return
                    pending -= isinstance(event, Done)
        finally:
            for t in tickets:
                self.scheduler.cancel(t)

    async def _collect(self, events: AsyncIterator[Event], disconnected: Disconnected, tickets: list[Ticket],
                       queue: asyncio.Queue) -> _Choices | S.ServingError:  # fmt: skip
        async def watch() -> None:
            while not await disconnected():
                await asyncio.sleep(0.25)
            queue.put_nowait(Failed(_CLIENT_GONE))

        watcher = asyncio.create_task(watch())
        got = _Choices(texts={}, reasons={})
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Failed):
                        return event.error
                    _record(got, event)
        finally:
            watcher.cancel()
        return got

    # ---- endpoints

    async def completion(self, req: S.CompletionRequest, disconnected: Disconnected):
        jobs = self._completion_jobs(req)
        submitted = jobs if isinstance(jobs, S.ServingError) else self._submit(jobs)
        if isinstance(submitted, S.ServingError):
            return submitted
        tickets, queue = submitted
        echo = [self.tokenizer.decode(list(j.prompt)) if req.echo else "" for j in jobs for _ in range(j.n)]
        events = self._events(tickets, queue)
        rid, created = S.new_id("cmpl"), S.now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._completion_stream(events, rid=rid, created=created, echo=echo, include_usage=include_usage)
        got = await self._collect(events, disconnected, tickets, queue)
        if isinstance(got, S.ServingError):
            return got
        choices = [
            S.CompletionChoice(index=i, text=echo[i] + "".join(got.texts.get(i, [])), finish_reason=got.reasons.get(i))
            for i in range(len(echo))
        ]
        return S.Completion(id=rid, created=created, model=self.settings.model_id, choices=choices, usage=got.usage()).model_dump()

    def _completion_stream(self, events: AsyncIterator[Event], *, rid: str, created: int, echo: list[str],
                           include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
        def chunk(index: int, text: str, reason: str | None) -> str:
            choice = S.CompletionChoice(index=index, text=text, finish_reason=reason)
            return S.Completion(id=rid, created=created, model=self.settings.model_id, choices=[choice]).model_dump_json()

        def usage(u: S.Usage) -> str:
            return S.Completion(id=rid, created=created, model=self.settings.model_id, choices=[], usage=u).model_dump_json()

        return _sse(
            events, opening=[chunk(i, text, None) for i, text in enumerate(echo) if text],
            piece=lambda i, text: chunk(i, text, None), finished=lambda i, reason: chunk(i, "", reason),
            usage=usage if include_usage else None,
        )  # fmt: skip

    async def chat(self, req: S.ChatCompletionRequest, disconnected: Disconnected):
        job = self._chat_job(req)
        submitted = job if isinstance(job, S.ServingError) else self._submit([job])
        if isinstance(submitted, S.ServingError):
            return submitted
        tickets, queue = submitted
        events = self._events(tickets, queue)
        rid, created = S.new_id("chatcmpl"), S.now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._chat_stream(events, n=job.n, rid=rid, created=created, include_usage=include_usage)
        got = await self._collect(events, disconnected, tickets, queue)
        if isinstance(got, S.ServingError):
            return got
        choices = [
            S.ChatChoice(index=i, message=S.AssistantMessage(content="".join(got.texts.get(i, []))),
                         finish_reason=got.reasons.get(i))
            for i in range(job.n)
        ]  # fmt: skip
        return S.ChatCompletion(id=rid, created=created, model=self.settings.model_id, choices=choices, usage=got.usage()).model_dump()

    def _chat_stream(self, events: AsyncIterator[Event], *, n: int, rid: str, created: int,
                     include_usage: bool) -> AsyncIterator[str]:  # fmt: skip
        def chunk(choices: list[S.ChatChunkChoice], usage: S.Usage | None = None) -> str:
            return S.ChatCompletionChunk(
                id=rid, created=created, model=self.settings.model_id, choices=choices, usage=usage
            ).model_dump_json()

        role = [S.ChatChunkChoice(index=i, delta=S.Delta(role="assistant", content="")) for i in range(n)]
        return _sse(
            events, opening=[chunk(role)],
            piece=lambda i, text: chunk([S.ChatChunkChoice(index=i, delta=S.Delta(content=text))]),
            finished=lambda i, reason: chunk([S.ChatChunkChoice(index=i, delta=S.Delta(), finish_reason=reason)]),
            usage=(lambda u: chunk([], u)) if include_usage else None,
        )  # fmt: skip


class PieceJson:
    """(choice, text) -> the JSON of a chunk carrying that text, from a template that `render` (the
    response's own pydantic models) makes once per choice: building and dumping the models for every
    token cost the event loop more than sending the chunk. The text goes in as a JSON string."""

    _MARK = "@@tnlm-piece@@"  # plain ASCII: rendered as it is inside the JSON string

    def __init__(self, render: Callable[[int, str], str]) -> None:
        self.render = render
        self._parts: dict[int, tuple[str, str]] = {}

    def __call__(self, index: int, text: str) -> str:
        parts = self._parts.get(index)
        if parts is None:
            head, mark, tail = self.render(index, self._MARK).partition(self._MARK)
            if not mark or self._MARK in tail:
                raise ValueError("the chunk template must hold the text exactly once")
            parts = self._parts[index] = (head, tail)
        return parts[0] + json.dumps(text, ensure_ascii=False)[1:-1] + parts[1]


async def _sse(events: AsyncIterator[Event], *, opening: list[str], piece: Callable[[int, str], str],
               finished: Callable[[int, str], str], usage: Callable[[S.Usage], str] | None) -> AsyncIterator[str]:  # fmt: skip
    """The payloads of a streamed response: `opening`, a chunk per piece of text (`piece` renders its
    template once per choice, see PieceJson) and per finished choice, the usage chunk (when `usage` is
    given) and [DONE]; a failure ends the stream with its error body instead."""
    piece = PieceJson(piece)
    for payload in opening:
        yield payload
    got = _Choices(texts={}, reasons={})
    async with aclosing(events):  # a client that goes away cancels its generation right here
        async for event in events:
            if isinstance(event, Failed):
                yield _error_json(event.error)
                return
            _record(got, event)
            if isinstance(event, Piece):
                yield piece(event.choice, event.text)
            elif isinstance(event, Finished):
                yield finished(event.choice, event.reason)
    if usage is not None:
        yield usage(got.usage())
    yield SSE_DONE

def _ready(queue: asyncio.Queue) -> list[Event]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def _merged(events: list[Event]) -> list[Event]:
    """Consecutive pieces of the same choice as one: when the client side falls behind the scheduler,
    it sends fewer, larger chunks instead of falling further behind."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, Piece) and isinstance(last, Piece) and last.choice == event.choice:
            out[-1] = Piece(event.choice, last.text + event.text)
        else:
            out.append(event)
    return out


def _record(got: _Choices, event: Event) -> None:
    if isinstance(event, Piece):
        got.texts.setdefault(event.choice, []).append(event.text)
    elif isinstance(event, Finished):
        got.reasons[event.choice] = event.reason
    elif isinstance(event, Done):
        got.prompt_tokens += event.prompt_tokens
        got.cached_tokens += event.cached_tokens
        got.completion_tokens += event.completion_tokens


def _error_json(error: S.ServingError) -> str:
    return json.dumps(error.body())
