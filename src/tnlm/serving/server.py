"""Putting a server together: load the model, build scheduler, service and app, run uvicorn.

>>> settings = ServerOptions(model="tnl-tiny")  # then: run(settings) serves until Ctrl-C
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from transformers.utils import logging as hf_logging

from tnlm.devices import check_fits, resolve_device, resolve_dtype
from tnlm.errors import ConfigError
from tnlm.generation.tokenizer import TextTokenizer, load_tokenizer, tokenizer_from_folder
from tnlm.models.registry import PRESETS, create_model, load_config, meta_model
from tnlm.models.summary import summarize
from tnlm.serving.app import create_app
from tnlm.serving.listen import LOOPBACK, listen
from tnlm.serving.metrics import ServerMetrics
from tnlm.serving.prompts import LockedTokenizer
from tnlm.serving.scheduler import Scheduler
from tnlm.serving.service import ServeSettings, Service
from tnlm.serving.state_cache import StateCache

API_KEY_ENV = "TNLM_API_KEY"
GRACE_S = 3.0  # after Ctrl-C or SIGTERM, how long requests in flight may go on before they are failed


@dataclass(frozen=True)
class ServerOptions:
    model: str
    tokenizer: Path | None = None  # default: the model directory's own, or the byte tokenizer for a preset
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None
    max_batch: int = 32
    max_queue: int = 64
    max_model_len: int | None = None
    max_tokens_limit: int = 4096
    state_cache_mb: float = 512.0
    request_timeout_s: float = 600.0
    prefill_chunk: int = 512
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    log_level: str = "warning"
    reference: bool = False  # decode with the model's forward instead of the fast step (same tokens, slower)

    def check(self) -> None:
        positive = {"max_batch": self.max_batch, "max_queue": self.max_queue, "prefill_chunk": self.prefill_chunk,
                    "max_tokens_limit": self.max_tokens_limit, "request_timeout_s": self.request_timeout_s}  # fmt: skip
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {value}")
        if self.state_cache_mb < 0:
            raise ConfigError(f"state-cache-mb must be >= 0 (0 keeps no states), got {self.state_cache_mb}")
        resolve_dtype(self.dtype)
        resolve_device(self.device)
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(f"the API key is empty; give a non-empty --api-key or unset {API_KEY_ENV}")


def _model_len(options: ServerOptions) -> tuple[int | None, dict | None]:
    """The server's context limit and, for a preset asked to go past its own, the config override."""
    limit = getattr(load_config(options.model), "max_position_embeddings", None)
    asked = options.max_model_len
    if asked is None or (limit is not None and asked <= limit) or limit is None:
        return (asked if asked is not None else limit), None
    if options.model in PRESETS:  # random weights: any length is as good as another
        return asked, {"max_position_embeddings": asked}
    raise ConfigError(
        f"--max-model-len {asked} exceeds the model's max_position_embeddings ({limit}); "
        "serve it at that length or less"
    )


def load(options: ServerOptions) -> tuple[torch.nn.Module, TextTokenizer, int | None]:
    """The model (eval mode), its tokenizer, and the context limit the server enforces. Everything a
    user can get wrong (config, tokenizer, memory) is checked before the weights are read."""
    dtype, device = resolve_dtype(options.dtype), resolve_device(options.device)
    max_len, overrides = _model_len(options)
    vocab_size = load_config(options.model).vocab_size
    if options.tokenizer is not None:
        tokenizer = tokenizer_from_folder(options.tokenizer, vocab_size=vocab_size)
    else:
        tokenizer = load_tokenizer(options.model, vocab_size=vocab_size)
    nbytes = summarize(meta_model(options.model)).weight_bytes(dtype.itemsize)
    check_fits(nbytes, device, what=f"the weights of {options.model} in {options.dtype}")
    hf_logging.disable_progress_bar()  # the server prints its own one line when it listens
    model = create_model(options.model, overrides=overrides, dtype=dtype, device=device, seed=0).eval()
    return model, tokenizer, max_len


def build_app(options: ServerOptions) -> tuple[FastAPI, Scheduler]:
    """The app and its scheduler (not started)."""
    options.check()
    if options.threads:
        torch.set_num_threads(options.threads)
    model, tokenizer, max_len = load(options)
    tokenizer = LockedTokenizer(tokenizer)
    metrics = ServerMetrics()
    cache = StateCache(int(options.state_cache_mb * 2**20))
    scheduler = Scheduler(model, tokenizer, metrics=metrics, state_cache=cache, max_batch=options.max_batch,
                          max_queue=options.max_queue, prefill_chunk=options.prefill_chunk,
                          reference=options.reference)  # fmt: skip
    settings = ServeSettings(
        model_id=options.served_model_name or options.model, max_model_len=max_len,
        max_tokens_limit=options.max_tokens_limit, request_timeout_s=options.request_timeout_s,
        max_batch=options.max_batch,
    )  # fmt: skip
    service = Service(model=model, tokenizer=tokenizer, scheduler=scheduler, settings=settings)
    return create_app(service, metrics=metrics, api_key=options.api_key, shutdown_grace_s=GRACE_S + 2), scheduler


class _Server(uvicorn.Server):
    """uvicorn's server, but a shutdown that outlasts its grace period stops the scheduler: requests
    still in flight then end with an error ("the server is shutting down", an error event in a stream)
    instead of a connection cut in the middle of a reply."""

    def __init__(self, config: uvicorn.Config, *, scheduler: Scheduler, grace_s: float) -> None:
        super().__init__(config)
        self.scheduler, self.grace_s = scheduler, grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.grace_s, lambda: loop.run_in_executor(None, self.scheduler.stop))
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def run(options: ServerOptions, *, sock: socket.socket | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: requests in flight get GRACE_S seconds to finish,
    then fail with a 503 error).
    `sock`: a socket already listening (tnlm.serving.listen), else one is opened on host:port first,
    so that a port in use fails before the model loads."""
    try:
        options.check()
        sock = sock or listen(options.host, options.port)
        app, scheduler = build_app(options)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    host, port = sock.getsockname()[:2]
    auth = "API key required" if options.api_key else "no API key"
    if not options.api_key and host not in LOOPBACK:
        auth += f"; anyone who can reach {host} can use it: set --api-key"
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {options.served_model_name or options.model} at http://{shown}:{port}/v1 ({auth}); Ctrl-C stops",
          file=sys.stderr, flush=True)  # fmt: skip
    config = uvicorn.Config(app, log_level=options.log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=int(GRACE_S) + 5)  # fmt: skip
    scheduler.start()
    try:
        _Server(config, scheduler=scheduler, grace_s=GRACE_S).run(sockets=[sock])
    finally:
        scheduler.stop()
        sock.close()
