"""The routes: OpenAI-compatible generation, tokenizer utilities, health and metrics.

Handlers find the shared `State` on `request.app.state.tribit`. Every piece of CPU work
that grows with the request (parsing the JSON body, tokenizing, rendering a template,
serialising long id lists) runs in a worker thread, never on the event loop, so /health
and the other clients keep being answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from ..chat import TemplateBudgetError, chat_prompt_tokens
from ..embedding import POOLINGS, embedding_tokens
from ..errors import ContextLengthError, ModelError, TribitError
from ..generation import check_prompt
from ..protocol import Responder
from .card import model_card
from .engine import EmbedJob, EngineStoppedError, Job, QueueFullError
from .errors import context_error, error
from .schemas import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    SamplingFields,
    TokenizeRequest,
)
from .state import State
from .streaming import answer, stream_answer

STATIC = Path(__file__).with_name("static")


def _state(request: Request) -> State:
    return request.app.state.tribit


def _not_ready(state: State) -> JSONResponse | None:
    """The answer while the model is loading or failed to load; None when ready."""
    if state.engine is not None:
        return None
    if state.load_error:
        return error(
            500,
            f"the model failed to load: {state.load_error}",
            "load_failed",
            etype="server_error",
        )
    return error(503, "the model is loading", "loading", etype="unavailable_error")


def _parse(schema: type[BaseModel], raw: bytes) -> BaseModel:
    """JSON body -> request object (in a worker thread: a 4 MiB body takes a while)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",)}]) from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


async def _body(request: Request, schema: type[BaseModel]) -> Any:
    return await run_in_threadpool(_parse, schema, await request.body())


# -- pages and service routes -------------------------------------------------------
async def health(request: Request):
    state = _state(request)
    if state.load_error:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=500)
    if state.engine is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    if not state.engine.alive:  # died (a bug) or shutting down: nothing gets answered
        why = state.engine.error or "stopped"
        return JSONResponse(
            {"status": "error", "error": f"the engine thread is not running: {why}"},
            status_code=500,
        )
    return {"status": "ok"}


async def index(request: Request):
    return FileResponse(STATIC / "index.html")


async def static(request: Request):
    name = request.path_params["name"]
    if name not in ("app.js", "style.css"):
        return error(404, "not found", "not_found")
    return FileResponse(STATIC / name)


async def models(request: Request):
    state = _state(request)
    if (r := _not_ready(state)) is not None:
        return r
    m = state.model
    meta = {
        "n_ctx": m.n_ctx,
        "n_vocab": m.config.n_vocab,
        "arch": m.config.arch,
        "n_parallel": m.n_seq,
        **model_card(m.metadata),
    }  # description, examples, temperature: the web page
    card = {
        "id": state.model_id,
        "object": "model",
        "created": int(state.t_start),
        "owned_by": "tribit",
        "meta": meta,
    }
    return {"object": "list", "data": [card]}


async def metrics(request: Request):
    e = _state(request).engine
    m = e.metrics if e is not None else None
    tps = m.generated_tokens_total / m.gen_seconds_total if m and m.gen_seconds_total else 0.0
    rows = [
        (
            "requests_total",
            "counter",
            "Generation requests accepted.",
            m.requests_total if m else 0,
        ),
        (
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of started requests.",
            m.prompt_tokens_total if m else 0,
        ),
        (
            "prompt_tokens_cached_total",
            "counter",
            "Prompt tokens reused from a KV slot instead of computed.",
            m.prompt_cached_tokens_total if m else 0,
        ),
        (
            "tokens_predicted_total",
            "counter",
            "Tokens generated.",
            m.generated_tokens_total if m else 0,
        ),
        (
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput (tokens/s).",
            round(tps, 3),
        ),
        ("requests_deferred", "gauge", "Requests waiting in the queue.", e.queue_depth if e else 0),
        ("requests_processing", "gauge", "Busy sequence slots.", e.busy_slots if e else 0),
    ]
    lines = []
    for name, kind, help_, value in rows:
        lines += [
            f"# HELP tribit_{name} {help_}",
            f"# TYPE tribit_{name} {kind}",
            f"tribit_{name} {value}",
        ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def tokenize(request: Request):
    state = _state(request)
    if (r := _not_ready(state)) is not None:
        return r
    body = await _body(request, TokenizeRequest)

    def work() -> Response:
        toks = state.model.tokenizer.encode(
            body.content, add_bos=body.add_special, special=body.parse_special
        )
        return _ids_response("tokens", toks)

    return await run_in_threadpool(work)


async def detokenize(request: Request):
    state = _state(request)
    if (r := _not_ready(state)) is not None:
        return r
    body = await _body(request, DetokenizeRequest)
    n_vocab = state.model.config.n_vocab
    bad = next((t for t in body.tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        return error(400, f"token id {bad} out of range [0, {n_vocab})", "invalid_token")
    return await run_in_threadpool(
        lambda: JSONResponse({"content": state.model.tokenizer.decode(body.tokens)})
    )


def _ids_response(key: str, ids: list[int]) -> Response:
    """{key: ids} as JSON, serialised in slices: one json.dumps of millions of ids holds the
    GIL for half a second; slices let the event loop thread in between."""
    step = 1 << 16
    parts = [",".join(map(str, ids[i : i + step])) for i in range(0, len(ids), step)]
    return Response('{"' + key + '":[' + ",".join(parts) + "]}", media_type="application/json")


# -- generation ---------------------------------------------------------------------
def _not_generative(state: State) -> JSONResponse | None:
    """An embedding model (its file defines a pooling type) has no head to generate with."""
    if state.embedding_only:
        return error(
            400,
            f"the model {state.model_id!r} is an embedding model (its file "
            f"defines pooling {state.model.config.pooling!r}): it serves "
            "/v1/embeddings, not completions",
            "model_not_generative",
            param="model",
        )
    return None


async def completions(request: Request):
    state = _state(request)
    if (r := _not_ready(state) or _not_generative(state)) is not None:
        return r
    body = await _body(request, CompletionRequest)
    m = state.model
    if not body.prompt:  # "" or []: SERVER.md
        return error(400, "the prompt is empty", "empty_prompt", param="prompt")
    if isinstance(body.prompt, list):
        toks = body.prompt
    else:  # CPU work: never on the event loop
        toks = await run_in_threadpool(
            m.tokenizer.encode, body.prompt, add_bos=bool(m.tokenizer.add_bos), special=True
        )
    return await _generate(request, state, body, toks, chat=False)


async def chat_completions(request: Request):
    state = _state(request)
    if (r := _not_ready(state) or _not_generative(state)) is not None:
        return r
    body = await _body(request, ChatRequest)
    if state.template_error:
        return error(500, state.template_error, "template_error", etype="server_error")
    try:  # normalising, rendering (the template in its budget) and tokenizing: off the loop
        toks = await run_in_threadpool(chat_prompt_tokens, state.model, body.messages)
    except TemplateBudgetError as e:
        return error(500, str(e), "template_budget_exceeded", etype="server_error")
    except TribitError as e:
        return error(400, str(e), "invalid_messages", param="messages")
    return await _generate(request, state, body, toks, chat=True)


async def _generate(
    request: Request, state: State, body: SamplingFields, prompt: list[int], chat: bool
):
    """Check the prompt, queue the job, answer whole or as a stream."""
    try:  # a pass over up to millions of ids: in a worker thread
        await run_in_threadpool(check_prompt, state.model, prompt)
    except ContextLengthError as e:
        return context_error(e)
    except ModelError as e:  # an id outside the vocabulary
        return error(400, str(e), "invalid_token", param="prompt")
    except TribitError as e:
        return error(400, str(e), "invalid_prompt", param="prompt")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    try:
        job = Job(
            prompt,
            body.options(),
            emit=lambda chunk: loop.call_soon_threadsafe(queue.put_nowait, chunk),
        )
        state.engine.submit(job)
    except QueueFullError as e:
        return error(503, str(e), "queue_full", etype="unavailable_error")
    except EngineStoppedError as e:
        return error(503, str(e), "engine_stopped", etype="unavailable_error")
    except TribitError as e:  # sampling parameters the library refuses
        return error(400, str(e), "invalid_request")
    responder = Responder(chat=chat, model=state.model_id, with_timings=True)
    if body.stream:
        return stream_answer(
            job, queue, responder, body.include_usage(), state.settings.stream_interval_ms / 1000
        )
    return await answer(request, job, queue, responder)


# -- embeddings ---------------------------------------------------------------------
async def embeddings(request: Request):
    """OpenAI's /v1/embeddings: every input of every concurrent request shares the
    engine's embedding forwards; vectors L2-normalised (truncated to `dimensions` and
    renormalised when asked), as float lists or base64 of little-endian float32."""
    state = _state(request)
    if (r := _not_ready(state)) is not None:
        return r
    body = await _body(request, EmbeddingRequest)
    m = state.model
    pooling = state.pooling
    if pooling is None:
        return error(
            400,
            f"the model {state.model_id!r} defines no pooling (a generative "
            "model); start the server with --pooling last|mean|cls to embed with it",
            "model_not_embedding",
            param="model",
        )
    if pooling not in POOLINGS or pooling == "none":
        return error(
            400,
            f"pooling {pooling!r} gives no one vector per input; "
            "/v1/embeddings needs last, mean or cls",
            "pooling_not_supported",
        )
    items = body.inputs()
    if not items or any(len(x) == 0 for x in items):
        return error(400, "an input is empty", "empty_input", param="input")
    if body.dimensions is not None and body.dimensions > m.config.n_embd:
        return error(
            400,
            f"dimensions {body.dimensions} is above the model's {m.config.n_embd}",
            "invalid_dimensions",
            param="dimensions",
        )

    def tokenize() -> list[list[int]]:
        return [embedding_tokens(m, x, pooling) if isinstance(x, str) else x for x in items]

    try:
        ids = await run_in_threadpool(tokenize)
        for toks in ids:
            await run_in_threadpool(check_prompt, m, toks)
    except ContextLengthError as e:
        return context_error(e)
    except ModelError as e:
        return error(400, str(e), "invalid_token", param="input")
    except TribitError as e:
        return error(400, str(e), "invalid_input", param="input")
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def emit(result) -> None:
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    job = EmbedJob(ids, pooling, emit)
    try:
        state.engine.submit(job)
    except QueueFullError as e:
        return error(503, str(e), "queue_full", etype="unavailable_error")
    except EngineStoppedError as e:
        return error(503, str(e), "engine_stopped", etype="unavailable_error")
    try:
        result = await fut
    finally:
        job.cancelled.set()  # no-op when done; frees the slots if the client left
    if isinstance(result, BaseException):
        if isinstance(result, ContextLengthError):
            return context_error(result)
        if isinstance(result, TribitError):
            return error(400, str(result), "invalid_input")
        return error(
            500,
            f"embedding failed: {type(result).__name__}: {result}",
            "embedding_failed",
            etype="server_error",
        )
    return await run_in_threadpool(_embedding_response, state, body, result, sum(map(len, ids)))


def _embedding_response(state: State, body: EmbeddingRequest, vecs, n_tokens: int) -> Response:
    import numpy as np

    if body.dimensions is not None:
        vecs = vecs[:, : body.dimensions].astype(np.float64)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    vecs = np.ascontiguousarray(vecs, "<f4")
    if body.encoding_format == "base64":
        data = [base64.b64encode(v.tobytes()).decode("ascii") for v in vecs]
    else:
        data = [v.tolist() for v in vecs]
    doc = {
        "object": "list",
        "model": state.model_id,
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
    return JSONResponse(doc)


ROUTES = [
    ("/health", health, ["GET"]),
    ("/", index, ["GET"]),
    ("/static/{name}", static, ["GET"]),
    ("/v1/models", models, ["GET"]),
    ("/metrics", metrics, ["GET"]),
    ("/tokenize", tokenize, ["POST"]),
    ("/detokenize", detokenize, ["POST"]),
    ("/v1/completions", completions, ["POST"]),
    ("/v1/chat/completions", chat_completions, ["POST"]),
    ("/v1/embeddings", embeddings, ["POST"]),
]
