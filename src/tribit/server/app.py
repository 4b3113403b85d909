"""The HTTP application: OpenAI-compatible routes over the batching engine."""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import TribitError
from ..generate import make_sampling
from .card import model_card
from .engine import Engine, Job, QueueFullError
from .schemas import ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest

STATIC = Path(__file__).with_name("static")
PUBLIC_PATHS = {"/health", "/", "/static/app.js", "/static/style.css"}


@dataclass
class ServerSettings:
    model_path: str | None
    n_parallel: int = 4
    n_ctx: int | None = None
    n_threads: int | None = None
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_queue: int = 64
    max_body_bytes: int = 4 << 20
    model_name: str | None = None
    head_type: str | None = None  # tribit.load's: repack the head at load


def error(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    etype: str = "invalid_request_error",
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code, **extra}}
    return JSONResponse(body, status_code=status)


class State:
    """What the routes share: the model and engine once loaded."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.model = None
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.template_error: str | None = None
        self.t_start = time.time()

    def load(self) -> None:
        try:
            import tribit

            s = self.settings
            self.model = tribit.load(
                s.model_path, n_threads=s.n_threads, n_ctx=s.n_ctx, n_seq=s.n_parallel,
                head_type=s.head_type,
            )
            self.model.tokenizer  # noqa: B018 - build it before serving
            self.check_template()
            self.engine = Engine(self.model, max_queue=s.max_queue)
            self.engine.start()
        except Exception as e:  # reported by /health, and on the console
            self.load_error = f"{type(e).__name__}: {e}"
            print(f"tribit serve: error: the model failed to load: {self.load_error}",
                  file=sys.stderr, flush=True)

    def check_template(self) -> None:
        """Render the model's chat template once on a sample conversation, in its budget.
        A template that runs past the budget is disabled (chat requests get a 500 saying
        so, at once); one that merely raises is reported and still used."""
        from ..chat import chat_template
        from ..tokenizer.template_worker import TemplateBudgetError

        if chat_template(self.model) is None:
            return
        sample = [{"role": "system", "content": "You are helpful."},
                  {"role": "user", "content": "Hello!"}]
        try:
            chat_prompt_tokens(self.model, sample)
        except TemplateBudgetError as e:
            self.template_error = f"the model's chat template is disabled: {e}"
            print(f"tribit serve: error: {self.template_error}", file=sys.stderr, flush=True)
        except TribitError as e:
            print(f"tribit serve: warning: the model's chat template fails on a sample "
                  f"conversation: {e}", file=sys.stderr, flush=True)

    @property
    def model_id(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        return Path(str(self.model.path)).stem if self.model is not None else "tribit"


class GuardMiddleware:
    """API key (constant-time compare) and request body size limit, as plain ASGI.

    The body is read here, counted as it arrives and replayed to the app, so a
    chunked upload (no Content-Length) cannot outgrow the limit either; after the
    replay, the app's `receive` reaches the server's again and sees disconnects.
    """

    def __init__(self, app, state: State):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if s.api_key and scope["path"] not in PUBLIC_PATHS and scope["method"] != "OPTIONS":
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), s.api_key.encode()):
                return await error(
                    401, "invalid or missing API key", "invalid_api_key",
                    etype="authentication_error",
                )(scope, receive, send)
        too_large = error(
            413, f"request body larger than {s.max_body_bytes} bytes", "body_too_large"
        )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client left before sending it all
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > s.max_body_bytes:
                return await too_large(scope, receive, send)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(settings: ServerSettings, load_in_background: bool = True) -> FastAPI:
    state = State(settings)
    app = FastAPI(title="tribit", docs_url=None, redoc_url=None)
    app.state.tribit = state
    app.add_middleware(GuardMiddleware, state=state)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=not wildcard,  # never wildcard with credentials
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.on_event("startup")
    async def _startup() -> None:
        if load_in_background:
            threading.Thread(target=state.load, daemon=True).start()
        else:
            state.load()

    @app.on_event("shutdown")
    async def _shutdown() -> None:
        if state.engine is not None:
            state.engine.shutdown()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON (or not UTF-8)"
        return error(400, f"{loc + ': ' if loc else ''}{msg}", "invalid_request", param=loc or None)

    @app.exception_handler(TribitError)
    async def _tribit(request: Request, exc: TribitError):
        # bad input found below the routes (text that is not valid Unicode, ...)
        return error(400, str(exc), "invalid_request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "internal_error",
                     etype="server_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:
            return error(400, "the request body is not valid JSON (or not UTF-8)", "invalid_json")
        etype = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error(exc.status_code, str(exc.detail), None, etype=etype)

    def ready() -> JSONResponse | None:
        if state.engine is None:
            if state.load_error:
                return error(
                    500,
                    f"the model failed to load: {state.load_error}",
                    "load_failed",
                    etype="server_error",
                )
            return error(503, "the model is loading", "loading", etype="unavailable_error")
        return None

    @app.get("/health")
    async def health():
        if state.load_error:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=500)
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in ("app.js", "style.css"):
            return error(404, "not found", "not_found")
        return FileResponse(STATIC / name)

    @app.get("/v1/models")
    async def models():
        if (r := ready()) is not None:
            return r
        m = state.model
        return {
            "object": "list",
            "data": [
                {
                    "id": state.model_id,
                    "object": "model",
                    "created": int(state.t_start),
                    "owned_by": "tribit",
                    "meta": {
                        "n_ctx": m.n_ctx,
                        "n_vocab": m.config.n_vocab,
                        "arch": m.config.arch,
                        "n_parallel": m.n_seq,
                        **model_card(m.metadata),  # description, examples: the web page
                    },
                }
            ],
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        if (r := ready()) is not None:
            return r
        def work() -> JSONResponse:  # encoding and serialising MBs: not on the event loop
            toks = state.model.tokenizer.encode(
                body.content, add_bos=body.add_special, special=body.parse_special
            )
            return _ids_response("tokens", toks)

        return await run_in_threadpool(work)

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        if (r := ready()) is not None:
            return r
        n_vocab = state.model.config.n_vocab
        bad = [t for t in body.tokens if not 0 <= t < n_vocab]
        if bad:
            return error(400, f"token id {bad[0]} out of range [0, {n_vocab})", "invalid_token")
        return await run_in_threadpool(
            lambda: JSONResponse({"content": state.model.tokenizer.decode(body.tokens)})
        )

    @app.get("/metrics")
    async def metrics():
        e = state.engine
        lines = []

        def metric(name: str, kind: str, help_: str, value: float) -> None:
            lines.extend(
                [
                    f"# HELP tribit_{name} {help_}",
                    f"# TYPE tribit_{name} {kind}",
                    f"tribit_{name} {value}",
                ]
            )

        metric(
            "requests_total",
            "counter",
            "Generation requests accepted.",
            e.requests_total if e else 0,
        )
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens processed.",
            e.prompt_tokens_total if e else 0,
        )
        metric(
            "tokens_predicted_total",
            "counter",
            "Tokens generated.",
            e.generated_tokens_total if e else 0,
        )
        tps = e.generated_tokens_total / e.gen_seconds_total if e and e.gen_seconds_total else 0.0
        metric(
            "predicted_tokens_seconds",
            "gauge",
            "Average generation throughput (tokens/s).",
            round(tps, 3),
        )
        metric(
            "requests_deferred",
            "gauge",
            "Requests waiting in the queue.",
            e.queue_depth if e else 0,
        )
        metric("requests_processing", "gauge", "Busy sequence slots.", e.busy_slots if e else 0)
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def run_job(request: Request, body, prompt_tokens: list[int], chat: bool):
        m = state.model
        if not prompt_tokens:
            return error(400, "the prompt is empty", "empty_prompt", param="prompt")
        if len(prompt_tokens) >= m.n_ctx:
            return error(
                400,
                f"the prompt has {len(prompt_tokens)} tokens; the context holds {m.n_ctx}",
                "exceed_context_size_error",
                n_prompt_tokens=len(prompt_tokens),
                n_ctx=m.n_ctx,
            )
        bias = {int(k): v for k, v in (body.logit_bias or {}).items()}
        if any(not 0 <= k < m.config.n_vocab for k in bias):
            return error(
                400, "logit_bias names a token id out of range", "invalid_token", param="logit_bias"
            )
        sampler, processors = make_sampling(
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            min_p=body.min_p,
            typical_p=body.typical_p,
            repeat_penalty=body.repeat_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logit_bias=bias or None,
            seed=body.seed,
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        job = Job(
            prompt_tokens,
            body.limit(),
            sampler,
            processors,
            stops,
            emit=lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
        )
        try:
            state.engine.submit(job)
        except QueueFullError as e:
            return error(503, str(e), "queue_full", etype="unavailable_error")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model_id = state.model_id

        def choice(text: str, finish, delta: bool) -> dict:
            if chat and delta:
                return {
                    "index": 0,
                    "delta": {"content": text} if text else {},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            if chat:
                return {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        obj = "chat.completion" if chat else "text_completion"
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        if not body.stream:
            parts: list[str] = []

            async def watch() -> None:
                await wait_for_disconnect(request)
                job.cancelled.set()  # nobody will read the answer: free the slot now
                queue.put_nowait({"gone": True})

            watcher = asyncio.ensure_future(watch())
            try:
                while True:
                    ev = await queue.get()
                    if "gone" in ev:
                        return Response(status_code=499)  # nginx's "client closed request"
                    if "error" in ev:
                        return error(500, ev["error"], "generation_failed", etype="server_error")
                    parts.append(ev["text"])
                    if ev["finish_reason"] is not None:
                        return {
                            "id": rid,
                            "object": obj,
                            "created": created,
                            "model": model_id,
                            "choices": [choice("".join(parts), ev["finish_reason"], False)],
                            "usage": ev["usage"],
                            "timings": ev.get("timings"),
                        }
            finally:
                watcher.cancel()
                job.cancelled.set()  # no-op when finished; frees the slot if the client left

        async def sse():
            try:
                if chat:
                    first = {
                        "id": rid,
                        "object": chunk_obj,
                        "created": created,
                        "model": model_id,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ],
                    }
                    yield f"data: {json.dumps(first)}\n\n"
                while True:
                    ev = await queue.get()
                    if "error" in ev:
                        err = {"error": {"message": ev["error"], "type": "server_error"}}
                        yield f"data: {json.dumps(err)}\n\n"
                        break
                    done = ev["finish_reason"] is not None
                    if ev["text"] or done:
                        chunk = {
                            "id": rid,
                            "object": chunk_obj,
                            "created": created,
                            "model": model_id,
                            "choices": [choice(ev["text"], ev["finish_reason"], True)],
                        }
                        if done:
                            chunk["timings"] = ev.get("timings")
                        yield f"data: {json.dumps(chunk)}\n\n"
                    if done:
                        if body.include_usage():
                            usage = {
                                "id": rid,
                                "object": chunk_obj,
                                "created": created,
                                "model": model_id,
                                "choices": [],
                                "usage": ev["usage"],
                            }
                            yield f"data: {json.dumps(usage)}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                job.cancelled.set()  # client gone or stream over: the engine frees the slot

        return StreamingResponse(
            sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest):
        if (r := ready()) is not None:
            return r
        m = state.model
        if not body.prompt:  # "" or []: SERVER.md
            return error(400, "the prompt is empty", "empty_prompt", param="prompt")
        if isinstance(body.prompt, list):
            toks = body.prompt
            if any(not 0 <= t < m.config.n_vocab for t in toks):
                return error(400, "prompt token id out of range", "invalid_token", param="prompt")
        else:  # CPU work: never on the event loop
            toks = await run_in_threadpool(
                m.tokenizer.encode, body.prompt, add_bos=bool(m.tokenizer.add_bos), special=True
            )
        return await run_job(request, body, toks, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatRequest):
        if (r := ready()) is not None:
            return r
        from ..tokenizer.template_worker import TemplateBudgetError

        m = state.model
        try:
            messages = [{"role": msg.role, "content": msg.text()} for msg in body.messages]
        except ValueError as e:
            return error(400, str(e), "invalid_content", param="messages")
        if state.template_error:
            return error(500, state.template_error, "template_error", etype="server_error")
        try:  # rendering and tokenizing run in a worker thread (the template in its budget)
            toks = await run_in_threadpool(chat_prompt_tokens, m, messages)
        except TemplateBudgetError as e:
            return error(500, str(e), "template_budget_exceeded", etype="server_error")
        except TribitError as e:
            return error(400, f"the chat template failed: {e}", "template_error",
                         param="messages")
        return await run_job(request, body, toks, chat=True)

    return app


def _ids_response(key: str, ids: list[int]) -> Response:
    """{key: ids} as JSON, serialised in slices: one json.dumps of millions of ids holds the
    GIL for half a second; slices let the event loop thread in between."""
    step = 1 << 16
    parts = [",".join(map(str, ids[i : i + step])) for i in range(0, len(ids), step)]
    body = '{"' + key + '":[' + ",".join(parts) + "]}"
    return Response(body, media_type="application/json")


def chat_prompt_tokens(model, messages: list[dict]) -> list[int]:
    """Prompt ids of a chat: the model's template (a file's template in its budgeted worker),
    message contents encoded as plain text, BOS once (tokenizer.chat.encode_chat)."""
    from ..chat import chat_template
    from ..tokenizer.chat import encode_chat

    tok = model.tokenizer
    bos = _token_text(tok, tok.bos_id)
    toks = encode_chat(tok, messages, chat_template(model), add_generation_prompt=True,
                       bos_token=bos, eos_token=_token_text(tok, tok.eos_id),
                       add_bos=bool(tok.add_bos))
    # a template that already writes the BOS text must not get a second one
    if tok.bos_id is not None and len(toks) > 1 and toks[0] == toks[1] == tok.bos_id:
        toks = toks[1:]
    return toks


def _token_text(tok, tid) -> str:
    if tid is None:
        return ""
    try:
        return tok.decode([tid])
    except Exception:
        return ""
