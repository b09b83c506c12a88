"""Continuous batching: one thread owns the model; requests join the running batch between steps.

Each loop iteration of the scheduler thread:
1. drops the requests whose client went away or whose time ran out (their state is freed at once);
2. admits waiting requests while the batch has room, starting each from the longest kept state
   whose tokens begin its prompt (StateCache);
3. feeds up to `prefill_chunk` tokens of the prompts being prefilled, oldest first (long prompts are
   cut into chunks so the running sequences keep decoding meanwhile); a finished prefill samples its
   first token and joins the batch. A recurrent state is kept one token before the prompt's end (see
   state_cache.py): its prefill stops there and the prompt's last token goes in with the batch's next
   step, which samples the first token (a separate forward call for that one token cost a third of a
   64-token prefill);
4. runs one decoding step for every running sequence; finished sequences leave, and the state of a
   finished sequence is kept for the conversation's next turn.

Requests reach the thread as Tickets; the thread answers with events (Piece, Finished, Done, Failed)
that it hands to the request's asyncio queue on the server's event loop. The events of a prefill or
a decoding step go over in one hand-off per event loop (an Outbox), not one per token: every
hand-off wakes the event loop and passes it the GIL, which the model's step then waits to get back.
A full waiting queue is refused at once (503 with Retry-After) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tnlm.generation.batch import DecodeBatch, RowSampler, SequenceState, feed, sample_rows
from tnlm.generation.sampling import SamplingParams
from tnlm.generation.streaming import TextStream
from tnlm.generation.tokenizer import TextTokenizer
from tnlm.serving.metrics import ServerMetrics
from tnlm.serving.schemas import ServingError
from tnlm.serving.state_cache import StateCache

log = logging.getLogger("tnlm.serving")


@dataclass(frozen=True)
class Job:
    """One prompt to continue, already tokenized and validated."""

    prompt: Sequence[int]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    eos_ids: frozenset[int] = frozenset()
    seed: int | None = None
    n: int = 1  # independent continuations of the prompt, sharing its prefill
    timeout_s: float = 600.0


@dataclass(frozen=True)
class Piece:
    choice: int
    text: str


@dataclass(frozen=True)
class Finished:
    choice: int
    reason: str  # "stop" (EOS, end marker or a stop string) or "length"


@dataclass(frozen=True)
class Done:
    """Every choice of the job has finished."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ServingError


Event = Piece | Finished | Done | Failed


def _deliver(pairs: list[tuple[Ticket, Event]]) -> None:
    """On the event loop: each event into its ticket's queue, in the order they were emitted."""
    for ticket, event in pairs:
        ticket.events.put_nowait(event)


class Outbox:
    """Events waiting to be handed to the event loop. put() only collects (scheduler thread);
    flush() hands everything collected over in one call per event loop."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Ticket, Event]] = []

    def __len__(self) -> int:
        return len(self._pairs)

    def put(self, ticket: Ticket, event: Event) -> None:
        self._pairs.append((ticket, event))

    def flush(self) -> None:
        if not self._pairs:
            return
        pairs, self._pairs = self._pairs, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Ticket, Event]]] = {}
        for ticket, event in pairs:
            by_loop.setdefault(ticket.loop, []).append((ticket, event))
        for loop, part in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, part)
            except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
                for ticket, _ in part:
                    ticket.cancelled = True


class Ticket:
    """A submitted job as both threads see it. The scheduler calls emit(); the request side reads
    `events` and sets `cancelled` when its client goes away. Once submitted, a ticket's events go
    through its scheduler's Outbox (`outbox`), set by Scheduler.submit."""

    def __init__(self, job: Job, *, events: asyncio.Queue, first_choice: int = 0) -> None:
        self.job, self.events, self.first_choice = job, events, first_choice
        self.loop = asyncio.get_running_loop()
        self.outbox: Outbox | None = None
        self.created = time.monotonic()
        self.deadline = self.created + job.timeout_s
        self.cancelled = False
        self.closed = False  # the scheduler has sent Done or Failed
        self.remaining = job.n
        self.cached_tokens = self.completion_tokens = 0
        self.first_token_at: float | None = None

    def emit(self, event: Event) -> None:
        """Only for a submitted ticket (the scheduler's): its events leave through the outbox."""
        self.outbox.put(self, event)

    def fail(self, error: ServingError) -> None:
        if not self.closed:
            self.closed = True
            self.emit(Failed(error))


@dataclass
class _Prefill:
    ticket: Ticket
    state: SequenceState
    fed: int  # prompt tokens the state holds
    last_in_batch: bool  # the prefill stops one token short; the batch's step feeds the last one


@dataclass
class _Seq:
    ticket: Ticket
    choice: int
    sampler: RowSampler
    stream: TextStream
    tokens: list[int] = field(default_factory=list)  # sampled so far
    fed: int = 0  # of those, how many the state has consumed
    reason: str | None = None


def _timeout(ticket: Ticket) -> ServingError:
    return ServingError(408, f"the request ran longer than the server's limit of {ticket.job.timeout_s:g} s",
                        type="timeout", code="request_timeout")  # fmt: skip


class Scheduler:
    """submit(ticket) from the event loop; everything else happens on the scheduler thread."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        *,
        metrics: ServerMetrics,
        state_cache: StateCache,
        max_batch: int = 32,
        max_queue: int = 64,
        prefill_chunk: int = 512,
        reference: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.metrics, self.cache = model, tokenizer, metrics, state_cache
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.vocab_size = int(model.config.vocab_size)
        self._cv = threading.Condition()
        self._inbox: deque[Ticket] = deque()
        self._prefills: deque[_Prefill] = deque()
        self._running: dict[int, _Seq] = {}
        self._outbox = Outbox()  # filled and flushed on the scheduler thread only
        self.reference = reference  # decode with the model's forward instead of the fast step
        self._batch = DecodeBatch(model, reference=reference)
        self._keys = itertools.count()
        self._stopping = False
        self._can_rewind: bool | None = None  # learned on the scheduler thread (see _rewindable)
        self._used = 0  # batch places taken at the end of the last iteration (read by submit)
        self._thread = threading.Thread(target=self._run, name="tnlm-scheduler", daemon=True)

    # ---- the request side

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, ticket: Ticket) -> ServingError | None:
        """Queue a ticket; a 503 (with Retry-After) when more than max_queue requests would have to wait
        for a place in the batch, or when the server stops."""
        with self._cv:
            if not self.alive:
                return ServingError(503, "the server is shutting down", type="server_error", code="unavailable")
            if len(self._inbox) >= self.max_queue + max(self.max_batch - self._used, 0):
                return ServingError(
                    503, f"the server is busy ({self.max_queue} requests already waiting); retry shortly",
                    type="server_error", code="queue_full", headers={"Retry-After": "1"},
                )  # fmt: skip
            ticket.outbox = self._outbox
            self._inbox.append(ticket)
            self.metrics.queue_length.set(len(self._inbox))
            self._cv.notify()
        return None

    def cancel(self, ticket: Ticket) -> None:
        """The client went away: stop its generation and free its state at the next step."""
        ticket.cancelled = True
        with self._cv:
            self._cv.notify()

    # ---- the scheduler thread

    def _idle(self) -> bool:
        return not (self._inbox or self._prefills or self._running)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and self._idle():
                    self._cv.wait(timeout=1.0)
                if self._stopping:
                    break
            try:
                with torch.inference_mode():
                    self._iteration()
            except Exception:  # whatever it was, the requests in flight fail and the server goes on
                log.exception("scheduler iteration failed")
                self._fail_everything(ServingError(500, "internal error in the scheduler", type="server_error"))
            self._outbox.flush()
        self._fail_everything(ServingError(503, "the server is shutting down", type="server_error", code="unavailable"))
        self._outbox.flush()

    def _iteration(self) -> None:
        self._reap()
        self._admit()
        if self._prefills:
            self._prefill_step()
            self._outbox.flush()  # first tokens go out now, not after the decoding step
        if self._running:
            self._decode_step()  # its events go out when _run flushes after this iteration
        with self._cv:
            self._used = self._slots_used()
        self.metrics.set_load(
            queue=len(self._inbox), running=len(self._running), prefilling=len(self._prefills),
            batch_bytes=self._batch.nbytes(), cache=self.cache,
        )  # fmt: skip

    def _gone(self, ticket: Ticket) -> bool:
        """Cancelled, timed out (then told so) or already closed: its work stops here."""
        if not ticket.closed and not ticket.cancelled and time.monotonic() > ticket.deadline:
            ticket.fail(_timeout(ticket))
            self.metrics.timeouts.inc()
        if ticket.cancelled and not ticket.closed:
            ticket.closed = True
            self.metrics.cancelled.inc()
        return ticket.closed

    def _reap(self) -> None:
        with self._cv:
            self._inbox = deque(t for t in self._inbox if not self._gone(t))
        self._prefills = deque(p for p in self._prefills if not self._gone(p.ticket))
        for key in [k for k, s in self._running.items() if self._gone(s.ticket)]:
            self._batch.leave(key)
            del self._running[key]

    def _slots_used(self) -> int:
        return len(self._running) + sum(p.ticket.job.n for p in self._prefills)

    def _admit(self) -> None:
        while True:
            with self._cv:
                if not self._inbox or self._slots_used() + self._inbox[0].job.n > self.max_batch:
                    return
                ticket = self._inbox.popleft()
            try:
                hit = self.cache.lookup(ticket.job.prompt)
            except Exception:  # this ticket is in no list now: fail it here
                log.exception("state cache lookup failed")
                ticket.fail(ServingError(500, "internal error while admitting the request", type="server_error"))
                continue
            ticket.cached_tokens = hit.tokens
            self.metrics.admitted(prompt=len(ticket.job.prompt), cached=hit.tokens, hit=hit.entry is not None)
            last_in_batch = not self._rewindable() and self.cache.max_bytes > 0 and len(ticket.job.prompt) >= 2
            self._prefills.append(_Prefill(ticket, hit.state, hit.tokens, last_in_batch=last_in_batch))

    def _rewindable(self) -> bool:
        """Whether this family's decoding state can be cut back to an earlier token (a KV cache can, a
        recurrent state cannot), as a one-token state of the model says."""
        if self._can_rewind is None:
            probe = SequenceState()
            feed(self.model, probe, [0])
            self._can_rewind = probe.truncatable
        return self._can_rewind

    def _prefill_step(self) -> None:
        """Feed up to prefill_chunk prompt tokens, oldest prompt first (several short prompts fit in
        one step; a long one takes several steps, with decoding steps in between)."""
        budget = self.prefill_chunk
        while self._prefills and budget > 0:
            p = self._prefills[0]
            prompt = p.ticket.job.prompt
            stop = len(prompt) - 1 if p.last_in_batch else len(prompt)
            try:
                logits = None
                if p.fed < stop:
                    end = min(p.fed + budget, stop)
                    logits = feed(self.model, p.state, prompt[p.fed : end])
                    budget -= end - p.fed
                    p.fed = end
                if p.fed == stop:
                    self._prefills.popleft()
                    if p.last_in_batch and logits is not None:  # a state one token short, not from the cache
                        self.cache.put(prompt[: p.fed], p.state.clone(), supersede=True)
                    self._start(p, None if p.last_in_batch else logits)
            except Exception:  # a bug must cost this request, not the server
                log.exception("prefill failed")
                if self._prefills and self._prefills[0] is p:
                    self._prefills.popleft()
                p.ticket.fail(ServingError(500, "internal error during prefill", type="server_error"))

    def _start(self, p: _Prefill, logits: torch.Tensor | None) -> None:
        """The prompt is in: sample each choice's first token; unfinished choices join the batch. With
        `logits` None the state lacks the prompt's last token: the choices join the batch with it as
        their next input, and the batch's step samples their first tokens."""
        job = p.ticket.job
        base_seed = job.seed if job.seed is not None else random.getrandbits(62)
        seqs = [
            _Seq(p.ticket, i, RowSampler.create(job.sampling, seed=base_seed + i, vocab_size=self.vocab_size,
                                                prompt=job.prompt), TextStream(self.tokenizer, stop=job.stop))
            for i in range(job.n)
        ]  # fmt: skip
        states = [p.state] + [p.state.clone() for _ in range(job.n - 1)]
        if logits is None:
            for seq, state in zip(seqs, states):
                self._join(seq, state)
            return
        first = sample_rows(logits.expand(job.n, -1), [s.sampler for s in seqs])
        self.metrics.step(tokens=job.n)
        for seq, state, tok in zip(seqs, states, first):
            if self._accept(seq, tok):
                self._finish(seq, state)
            else:
                self._join(seq, state)

    def _join(self, seq: _Seq, state: SequenceState) -> None:
        key = next(self._keys)
        self._running[key] = seq
        self._batch.join(key, state)

    def _decode_step(self) -> None:
        keys = list(self._batch.keys)
        seqs = [self._running[k] for k in keys]
        try:
            # a sequence without tokens joined with its prompt's last token not yet fed (_start)
            logits = self._batch.step(torch.tensor([s.tokens[-1] if s.tokens else s.ticket.job.prompt[-1] for s in seqs]))
            for s in seqs:
                s.fed += bool(s.tokens)
            tokens = sample_rows(logits, [s.sampler for s in seqs])
        except Exception:
            log.exception("decoding step failed")
            for s in seqs:
                s.ticket.fail(ServingError(500, "internal error during decoding", type="server_error"))
            self._running.clear()
            self._batch = DecodeBatch(self.model, reference=self.reference)
            return
        self.metrics.step(tokens=len(keys))
        for key, seq, tok in zip(keys, seqs, tokens):
            if self._accept(seq, tok) or seq.ticket.closed:
                state = self._batch.leave(key, keep_state=seq.choice == 0 and not seq.ticket.closed)
                del self._running[key]
                self._finish(seq, state)

    def _accept(self, seq: _Seq, tok: int) -> bool:
        """Record a sampled token and emit its text; True when the sequence has finished."""
        ticket, job = seq.ticket, seq.ticket.job
        seq.tokens.append(tok)
        ticket.completion_tokens += 1
        if ticket.first_token_at is None:
            ticket.first_token_at = time.monotonic()
            self.metrics.ttft.observe(ticket.first_token_at - ticket.created)
        if tok in job.eos_ids:
            seq.reason, piece = "stop", seq.stream.finish()
        else:
            piece = seq.stream.push(tok)
            if seq.stream.stopped:
                seq.reason = "stop"
            elif len(seq.tokens) >= job.max_tokens:
                seq.reason, piece = "length", piece + seq.stream.finish()
        if not ticket.closed:
            choice = ticket.first_choice + seq.choice
            if piece or len(seq.tokens) == 1:  # the first token is announced even while its text is held back
                ticket.emit(Piece(choice, piece))
            if seq.reason:
                ticket.emit(Finished(choice, seq.reason))
        return seq.reason is not None

    def _finish(self, seq: _Seq, state: SequenceState | None) -> None:
        ticket = seq.ticket
        if state is not None and seq.choice == 0:
            key = [*ticket.job.prompt, *seq.tokens[: seq.fed]]
            if state.length == len(key):
                self.cache.put(key, state, supersede=state.truncatable)  # a KV cache serves its prefixes too
        ticket.remaining -= 1
        if ticket.remaining == 0 and not ticket.closed:
            ticket.closed = True
            ticket.emit(Done(len(ticket.job.prompt), ticket.cached_tokens, ticket.completion_tokens))
            self.metrics.finished(latency=time.monotonic() - ticket.created)

    def _fail_everything(self, error: ServingError) -> None:
        with self._cv:
            tickets = [*self._inbox, *(p.ticket for p in self._prefills), *(s.ticket for s in self._running.values())]
            self._inbox.clear()
        for t in tickets:
            t.fail(error)
        self._prefills.clear()
        self._running.clear()
        self._batch = DecodeBatch(self.model, reference=self.reference)
