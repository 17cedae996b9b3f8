"""The HTTP layer: FastAPI routes that parse, authenticate and hand over to the Gateway.

No task- or model-specific logic lives here; see `gateway.py`.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from smallfleet.serve.console.access import ConsoleAccess
from smallfleet.serve.console.builder import Console
from smallfleet.serve.console.routes import router as console_router
from smallfleet.serve.drift import DriftMonitor
from smallfleet.serve.fleet import ServedFleet
from smallfleet.serve.reload import FleetWatcher
from smallfleet.serve.gateway import Gateway, GatewayError
from smallfleet.serve.keycheck import KeyCheck
from smallfleet.serve.metrics import GatewayMetrics
from smallfleet.serve.protocol import (
    BodyError,
    ChatCompletionRequest,
    Completion,
    FeedbackRequest,
    error_body,
    openapi_body,
    openapi_schemas,
    read_body,
    validation_message,
)
from smallfleet.serve.workers import runs_drift_checks
from smallfleet.store import Database
from smallfleet.store.journal import JOURNAL_FOLDER, Journal
from smallfleet.store.ledger import SPECIALIST_TIER, Ledger
from smallfleet.tiers.base import TierContext, build_tiers

STREAM_PIECE = 16  # characters per streamed chunk of an answer computed whole
REFUSED_INPUT_BYTES = 2000  # of a refused body, kept in the request log to show what the client sent


def create_app(fleet: ServedFleet, db: Database, loopback: bool = False) -> FastAPI:
    """The gateway app for a loaded fleet, logging to `db`. Tiers and the ledger start with the app.

    Args:
        loopback: the gateway listens on loopback only; then the console (`/ui`) is open while no key exists.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        ledger = Ledger(db, Journal(fleet.folder / JOURNAL_FOLDER, db.url, fleet.serving.journal_fsync))
        tiers = build_tiers(fleet.tiers, TierContext(client, db, fleet.serving.max_pending_reviews))
        app.state.gateway = gateway = Gateway(fleet, tiers, ledger, GatewayMetrics())
        app.state.keys = KeyCheck(db)
        app.state.console = Console(fleet, db, [t.name for t in tiers], fleet.serving.console_cache_seconds)
        app.state.console_access = ConsoleAccess(app.state.keys, open_without_keys=loopback)
        await gateway.auditor.start(list(fleet.tasks.values()))
        watcher = asyncio.get_running_loop().create_task(FleetWatcher(fleet).run())
        drift = drift_lock = None
        if fleet.serving.drift_every > 0 and fleet.serving.workers > 1:
            drift_lock = runs_drift_checks(fleet.folder)  # one worker checks; /metrics shows it from any
        if fleet.serving.drift_every > 0 and (fleet.serving.workers == 1 or drift_lock):
            app.state.drift = DriftMonitor(fleet, db, gateway.metrics)
            drift = asyncio.get_running_loop().create_task(app.state.drift.run())
        try:
            yield
        finally:
            watcher.cancel()
            if drift is not None:
                drift.cancel()
            if drift_lock is not None:
                drift_lock.close()
            await gateway.auditor.close()
            await gateway.shadow.close()
            app.state.console.close()
            await client.aclose()
            ledger.close()
            fleet.close()

    app = FastAPI(title="smallfleet gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(console_router)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        kind = "invalid_request_error" if exc.status < 500 else "api_error"
        extra = {"tried": exc.tried} if exc.tried else {}
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(error_body(exc.message, kind, exc.code, **extra), status_code=exc.status, headers=headers)

    @app.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest))
    async def chat_completions(request: Request):
        gateway: Gateway = request.app.state.gateway
        key_name = None
        try:
            key_name = request.app.state.keys.check(request.headers.get("authorization"))
            chat = await _parse(request, gateway.fleet.serving)
            await gateway.admit(chat, key_name)
        except GatewayError as exc:  # refused before the engine saw it: logged all the same
            gateway.refused(exc, key_name)
            raise
        live = gateway.live_stream_task(chat)
        if live is not None:
            return StreamingResponse(_live_events(gateway, live, chat, key_name), media_type="text/event-stream")
        completion = await gateway.complete(chat, key_name)
        if not chat.stream:
            return JSONResponse(completion.response(chat.model))
        content = completion.content
        pieces = [content[i : i + STREAM_PIECE] for i in range(0, len(content), STREAM_PIECE)]
        events = [f"data: {json.dumps(c)}\n\n" for c in completion.chunks(chat.model, pieces)] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    @app.post("/v1/feedback", openapi_extra=openapi_body(FeedbackRequest))
    async def feedback(request: Request):
        gateway: Gateway = request.app.state.gateway
        key, role = request.app.state.keys.caller(request.headers.get("authorization"))
        data = await _read_json(request, gateway.fleet.serving)
        try:
            body = FeedbackRequest.model_validate(data)
        except ValidationError as exc:
            raise GatewayError(400, validation_message(exc)) from None
        return JSONResponse(await gateway.feedback(body, key, role))

    @app.get("/v1/models")
    async def models(request: Request):
        request.app.state.keys.check(request.headers.get("authorization"))
        names = request.app.state.gateway.models()
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "smallfleet"} for n in names]}  # fmt: skip

    @app.get("/healthz")
    async def healthz(request: Request):
        gateway: Gateway = request.app.state.gateway
        return {"status": "ok", "fleet": gateway.fleet.name, "tasks": list(gateway.fleet.tasks),
                "router": gateway.fleet.router is not None, "tiers": [t.name for t in gateway.tiers],
                "circuits": gateway.circuits()}  # fmt: skip

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(request.app.state.gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    def openapi() -> dict:
        if app.openapi_schema is None:  # FastAPI's schema, with the body models the routes read themselves
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                openapi_schemas(ChatCompletionRequest, FeedbackRequest))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


async def _live_events(gateway: Gateway, task, chat: ChatCompletionRequest, key_name: str | None):
    """SSE events of a token-by-token answer: role, one chunk per piece, the finish (with smallfleet), [DONE]."""
    head = Completion(content="", tier=SPECIALIST_TIER, task=task.name, confidence=None)
    first = head.chunks(chat.model, [])[0]
    yield f"data: {json.dumps(first)}\n\n"
    done = head
    try:
        async for item in gateway.stream_live(task, chat, key_name):
            if isinstance(item, Completion):
                done = item
                continue
            (chunk,) = head.chunks(chat.model, [item])[1:-1]
            yield f"data: {json.dumps(chunk)}\n\n"
    except GatewayError as exc:  # headers are sent: the error travels as an event, as OpenAI's API does
        yield f"data: {json.dumps(error_body(exc.message, 'api_error', exc.code))}\n\n"
        return
    *_, last = Completion(**{**done.__dict__, "request_id": head.request_id, "created": head.created}).chunks(chat.model, [])
    yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


async def _read_json(request: Request, serving) -> dict:
    """The request body as a JSON object, or a 4xx that says what is wrong."""
    return _json(await _read_body(request, serving))


async def _read_body(request: Request, serving) -> bytes:
    """The raw request body; GatewayError(413) over `serving.max_request_bytes`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > serving.max_request_bytes:
        raise GatewayError(413, f"request body over the {serving.max_request_bytes}-byte limit")
    body = await request.body()
    if len(body) > serving.max_request_bytes:
        raise GatewayError(413, f"request body over the {serving.max_request_bytes}-byte limit")
    return body


def _json(body: bytes) -> dict:
    """The JSON object in `body`; GatewayError(400) with the reason when it is not one."""
    try:
        return read_body(body)
    except BodyError as exc:
        raise GatewayError(400, str(exc)) from None


async def _parse(request: Request, serving) -> ChatCompletionRequest:
    """The request body as a validated ChatCompletionRequest, or a 4xx that says what is wrong and carries
    what could be read of the request (its model and the start of its body) for the request log."""
    data: dict = {}
    body = await _read_body(request, serving)
    try:
        data = _json(body)
        if not data.get("messages"):
            raise GatewayError(400, "request has no messages: send at least one user message")
        try:
            chat = ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise GatewayError(400, validation_message(exc)) from None
        limit = chat.max_completion_tokens or chat.max_tokens
        if limit and limit > serving.max_tokens:
            raise GatewayError(400, f"max_tokens={limit} is over this gateway's limit of {serving.max_tokens}")
    except GatewayError as exc:
        model = data.get("model")
        exc.model = model if isinstance(model, str) else None
        exc.input = body[:REFUSED_INPUT_BYTES].decode("utf-8", "replace")
        raise
    return chat
