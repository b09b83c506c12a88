"""`tnlm serve`: an OpenAI-compatible HTTP server for one model (needs the `serve` extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from tnlm.cli.options import DEVICE, DTYPE, MODEL_ARG, TOKENIZER
from tnlm.errors import ConfigError
from tnlm.interrupt import on_interrupt


@on_interrupt("server stopped")  # uvicorn shuts down gracefully, then re-raises the Ctrl-C
def serve(
    model: str = MODEL_ARG,
    tokenizer: Path | None = TOKENIZER,
    host: str = typer.Option("127.0.0.1", help="Address to listen on. 0.0.0.0 exposes the server to the network: set an API key."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port; the one chosen is printed)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="TNLM_API_KEY", show_envvar=True,
                                       help="Require 'Authorization: Bearer KEY' on every /v1 and /metrics request."),
    served_model_name: str | None = typer.Option(None, help="The model name clients use (default: MODEL as given)."),
    max_batch: int = typer.Option(32, help="Sequences decoded together at most (continuous batching)."),
    max_queue: int = typer.Option(64, help="Requests that may wait for a place; beyond that: 503 with Retry-After."),
    max_model_len: int | None = typer.Option(None, help="Prompt + completion tokens allowed (default: the model's max_position_embeddings; none for TransNormer)."),
    max_tokens_limit: int = typer.Option(4096, help="The largest max_tokens a request may ask for."),
    state_cache_mb: float = typer.Option(512.0, help="Memory for kept conversation states (0: keep none)."),
    request_timeout: float = typer.Option(600.0, help="Seconds a request may take in all (queue + generation)."),
    prefill_chunk: int = typer.Option(512, help="Prompt tokens fed per scheduler step (long prompts do not stall others)."),
    threads: int | None = typer.Option(None, help="PyTorch CPU threads (default: PyTorch's choice)."),
    dtype: str = DTYPE,
    device: str = DEVICE,
    log_level: str = typer.Option("warning", help="uvicorn's log level: warning, info, debug."),
    reference: bool = typer.Option(False, "--reference", help="Decode with the general forward pass instead of the fast step (same tokens, slower)."),
) -> None:
    """Serve MODEL over HTTP: /v1/completions, /v1/chat/completions (both with streaming),
    /v1/models, /health, /metrics. Ctrl-C stops."""
    from tnlm.serving.listen import listen

    sock = listen(host, port)  # before the heavy imports: a port in use fails at once
    try:
        from tnlm.serving.server import ServerOptions, run
    except ImportError as e:
        sock.close()
        raise ConfigError(f"tnlm serve needs the serve extra ({e.name} is missing): pip install 'tnlm[serve]'") from None
    options = ServerOptions(
        model=model, tokenizer=tokenizer, host=host, port=port, api_key=api_key, served_model_name=served_model_name,
        max_batch=max_batch, max_queue=max_queue, max_model_len=max_model_len, max_tokens_limit=max_tokens_limit,
        state_cache_mb=state_cache_mb, request_timeout_s=request_timeout, prefill_chunk=prefill_chunk,
        threads=threads, dtype=dtype, device=device, log_level=log_level, reference=reference,
    )  # fmt: skip
    run(options, sock=sock)
