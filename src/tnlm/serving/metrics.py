"""Prometheus metrics of the server, in a registry of its own (several servers can share a process).

Counters and histograms follow Prometheus naming (`_total`, `_seconds`, `_bytes`); tokens/s is also
given directly as a gauge over the last few seconds, for a dashboard without PromQL.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from tnlm.serving.state_cache import StateCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_WINDOW_S = 10.0


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends
        self.requests = Counter("tnlm_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r)
        self.queue_length = Gauge("tnlm_queue_length", "Requests waiting to be admitted", registry=r)
        self.running = Gauge("tnlm_running_sequences", "Sequences in the decoding batch", registry=r)
        self.prefilling = Gauge("tnlm_prefilling_requests", "Requests whose prompt is being fed", registry=r)
        self.batch_bytes = Gauge("tnlm_batch_state_bytes", "Bytes of the running batch's decoding state", registry=r)
        self.prompt_tokens = Counter("tnlm_prompt_tokens", "Prompt tokens of admitted requests", registry=r)
        self.cached_tokens = Counter("tnlm_cached_prompt_tokens", "Prompt tokens taken from kept states", registry=r)
        self.generated_tokens = Counter("tnlm_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_s = Gauge("tnlm_generated_tokens_per_second", f"Tokens generated per second over the last {_RATE_WINDOW_S:g} s", registry=r)
        self.ttft = Histogram("tnlm_time_to_first_token_seconds", "From arrival to the first token", buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("tnlm_request_latency_seconds", "From arrival to the last token", buckets=_LATENCY_BUCKETS, registry=r)
        self.timeouts = Counter("tnlm_request_timeouts", "Requests stopped by the time limit", registry=r)
        self.cancelled = Counter("tnlm_requests_cancelled", "Requests whose client went away before the end", registry=r)
        self.cache_hits = Counter("tnlm_state_cache_hits", "Admitted requests that continued a kept state", registry=r)
        self.cache_misses = Counter("tnlm_state_cache_misses", "Admitted requests that started from scratch", registry=r)
        self.cache_bytes = Gauge("tnlm_state_cache_bytes", "Bytes held by kept states", registry=r)
        self.cache_entries = Gauge("tnlm_state_cache_entries", "Kept states", registry=r)
        self.cache_evictions = Counter("tnlm_state_cache_evictions", "Kept states dropped for room", registry=r)
        self._evictions_seen = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_tokens = 0  # the sum over _recent, kept as it changes (a step must not sum the window)
        self._lock = threading.Lock()

    def admitted(self, *, prompt: int, cached: int, hit: bool) -> None:
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        (self.cache_hits if hit else self.cache_misses).inc()

    def step(self, *, tokens: int) -> None:
        self.generated_tokens.inc(tokens)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, tokens))
            self._recent_tokens += tokens
            self._update_rate(now)

    def _update_rate(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent_tokens -= self._recent.popleft()[1]
        self.tokens_per_s.set(self._recent_tokens / _RATE_WINDOW_S)

    def finished(self, *, latency: float) -> None:
        self.latency.observe(latency)

    def set_load(self, *, queue: int, running: int, prefilling: int, batch_bytes: int, cache: StateCache) -> None:
        self.queue_length.set(queue)
        self.running.set(running)
        self.prefilling.set(prefilling)
        self.batch_bytes.set(batch_bytes)
        self.cache_bytes.set(cache.nbytes)
        self.cache_entries.set(len(cache))
        self.cache_evictions.inc(cache.evictions - self._evictions_seen)
        self._evictions_seen = cache.evictions
        with self._lock:
            self._update_rate(time.monotonic())

    def render(self) -> bytes:
        return generate_latest(self.registry)
