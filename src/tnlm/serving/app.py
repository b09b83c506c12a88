"""The HTTP layer: FastAPI routes that read the body, check the API key, call the Service and turn
its answer into a response. Nothing here knows about models or tokens.

    GET  /health                 liveness (no API key needed)
    GET  /metrics                Prometheus text format
    GET  /v1/models              the one model served
    POST /v1/completions         text completion, `stream: true` for server-sent events
    POST /v1/chat/completions    chat through tnlm's chat template, likewise
"""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tnlm.serving import schemas as S
from tnlm.serving.metrics import CONTENT_TYPE, ServerMetrics
from tnlm.serving.service import Service

log = logging.getLogger("tnlm.serving")
MAX_BODY_BYTES = 8 * 2**20


def _error_response(error: S.ServingError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes | S.ServingError:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return S.ServingError(413, f"the request body exceeds {limit // 2**20} MiB", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _authorized(request: Request, api_key: str | None) -> S.ServingError | None:
    if api_key is None:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode()):
        return None
    return S.ServingError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


def create_app(service: Service, *, metrics: ServerMetrics, api_key: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, shutdown_grace_s: float = 0.0) -> FastAPI:  # fmt: skip
    """The routes; the caller starts and stops `service.scheduler` around serving. When the server
    shuts down, a stream goes on for up to `shutdown_grace_s` seconds (time for the scheduler to end
    it with an error event) before it is cut."""
    app = FastAPI(title="tnlm", docs_url=None, redoc_url=None, openapi_url=None)

    def respond(endpoint: str, result) -> Response:
        if isinstance(result, S.ServingError):
            response = _error_response(result)
        elif isinstance(result, dict):
            response = JSONResponse(result)
        else:
            response = EventSourceResponse(result, ping=15, shutdown_grace_period=shutdown_grace_s)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    async def generate(request: Request, endpoint: str, schema: type, run) -> Response:
        error = _authorized(request, api_key)
        raw = error or await _read_body(request, max_body_bytes)
        parsed = raw if isinstance(raw, S.ServingError) else S.parse_request(schema, raw)
        if isinstance(parsed, S.ServingError):
            return respond(endpoint, parsed)
        return respond(endpoint, await run(parsed, request.is_disconnected))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completions", S.CompletionRequest, service.completion)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat", S.ChatCompletionRequest, service.chat)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return respond("models", _authorized(request, api_key) or service.models())

    @app.get("/health")
    async def health() -> Response:
        return respond("health", service.health())

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        error = _authorized(request, api_key)
        if error is not None:
            return respond("metrics", error)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = {404: f"no route {request.url.path}; see /v1/models, /v1/completions, /v1/chat/completions",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))  # fmt: skip
        return respond("other", S.ServingError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return respond("other", S.ServingError(500, "internal server error", type="server_error"))

    return app
