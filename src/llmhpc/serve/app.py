"""The HTTP app HELM talks to: POST /process, /tokenize, /decode (HELM's bodies, schema.py), GET /health.

FastAPI + uvicorn rather than LitServe: LitServe batches whole requests for one `predict` call (dynamic batching),
so a 16-token answer waits for the 1,500-token one beside it; continuous batching (engine.py) needs the loop to
own the KV cache between steps, which a plain app around one engine thread gives directly, with the OpenAPI schema
that the property-based tests fuzz. Bad requests get 4xx with a message (422: the body's shape, 400: what depends
on the model), a full queue 503 with Retry-After. Misnamed or unknown fields are answered with `warnings` (schema.py)
and logged; every request gets one access-log line with its status and latency (logger `llmhpc.serve`, to stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from llmhpc.serve.engine import BadRequest, Engine, QueueFull
from llmhpc.serve.schema import (
    DecodeRequest,
    DecodeResponse,
    ProcessRequest,
    ProcessResponse,
    TokenizeRequest,
    TokenizeResponse,
)

ERRORS = {400: {"description": "A request the loaded model cannot answer (length, vocabulary)"},
          503: {"description": "The request queue is full: retry later"}}
DISCONNECT_POLL_S = 0.25
LOG = logging.getLogger("llmhpc.serve")


def log_to_stderr() -> None:
    """uvicorn runs with its own access log off (log_level warning): this logger's lines go to stderr, once."""
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)


class AccessLog:
    """One line per request: client, method, path, status and latency (a plain ASGI middleware, so that the
    endpoint's own disconnect polling sees the client as it is)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            host = (scope.get("client") or ("-",))[0]
            LOG.info('%s "%s %s" %d %.1f ms', host, scope["method"], scope["path"], status[0],
                     (time.perf_counter() - t0) * 1000)


def warned(path: str, body) -> list[str]:
    """The request's notes on misnamed or unknown fields, logged; the answer carries them too."""
    for note in body.warnings:
        LOG.warning("%s: %s", path, note)
    return body.warnings


def create_app(engine: Engine) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        ours = engine.thread is None  # an engine started by its owner (a test) stays up
        engine.start()
        yield
        if ours:
            engine.stop()

    app = FastAPI(title="llmhpc-serve", description="A LitGPT checkpoint served to HELM", lifespan=lifespan)
    app.add_middleware(AccessLog)
    log_to_stderr()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        """422 naming each wrong field; ASCII-escaped, so that any input (a lone surrogate) can be echoed."""
        detail = [{k: e.get(k) for k in ("type", "loc", "msg", "input")} for e in err.errors()]
        return Response(json.dumps({"detail": detail}, ensure_ascii=True, default=repr), status_code=422,
                        media_type="application/json")

    @app.post("/process", response_model=ProcessResponse, responses=ERRORS)
    async def process(body: ProcessRequest, request: Request):
        t0 = time.perf_counter()
        notes = warned("/process", body)
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def on_done(result):
            loop.call_soon_threadsafe(lambda: future.done() or _settle(future, result))

        try:
            job = engine.make_job(body, on_done)
            engine.submit(job)
        except BadRequest as err:
            raise HTTPException(400, str(err)) from None
        except QueueFull as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        while not future.done():
            await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
            if not future.done() and await request.is_disconnected():
                engine.cancel(job)  # frees its slots at the engine's next step
                return Response(status_code=499)
        return ProcessResponse(**future.result(), request_time=time.perf_counter() - t0,
                               warnings=notes)

    @app.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
    async def tokenize(body: TokenizeRequest):
        t0 = time.perf_counter()
        ids = engine.encode(body.text)
        if body.truncation:
            ids = ids[:body.max_length]
        return TokenizeResponse(tokens=ids, request_time=time.perf_counter() - t0, warnings=warned("/tokenize", body))

    @app.post("/decode", response_model=DecodeResponse, responses=ERRORS)
    async def decode(body: DecodeRequest):
        t0 = time.perf_counter()
        notes = warned("/decode", body)
        bad = [t for t in body.tokens if not 0 <= t < engine.vocab]
        if bad:
            raise HTTPException(400, f"token ids outside the vocabulary [0, {engine.vocab}): {bad[:10]}")
        return DecodeResponse(text=engine.decode(body.tokens), request_time=time.perf_counter() - t0,
                              warnings=notes)

    @app.get("/health")
    async def health():
        return {"status": "ok", **engine.load()}

    return app


def _settle(future: asyncio.Future, result) -> None:
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
