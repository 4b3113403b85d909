"""Delivering a job's chunks to its client: one JSON answer, or a Server-Sent Events stream.

Both watch the client: when it leaves, the job is cancelled and its slot freed at once
(a non-streaming client that gives up would otherwise keep a slot busy for the whole
answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..generation import FINISH_ERROR
from ..protocol import Responder
from .engine import Job
from .errors import error

_GONE = object()  # queued when the client of a whole answer disconnects


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer(request: Request, job: Job, queue: asyncio.Queue, responder: Responder):
    """The whole answer as one JSON object."""

    async def watch() -> None:
        await _wait_for_disconnect(request)
        job.cancelled.set()  # nobody will read the answer: free the slot now
        queue.put_nowait(_GONE)

    watcher = asyncio.ensure_future(watch())
    parts: list[str] = []
    try:
        while True:
            chunk = await queue.get()
            if chunk is _GONE:
                return Response(status_code=499)  # nginx's "client closed request"
            if chunk.finish_reason == FINISH_ERROR:
                return _failed(chunk)
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                return responder.response("".join(parts), chunk)
    finally:
        watcher.cancel()
        job.cancelled.set()  # no-op when finished; frees the slot if the client left


def _failed(chunk: Any):
    from ..errors import ContextLengthError, TribitError
    from .errors import context_error

    e = chunk.error
    if isinstance(e, ContextLengthError):
        return context_error(e)
    if isinstance(e, TribitError):  # what the library refused about this request
        return error(400, str(e), "invalid_request")
    return error(
        500,
        f"generation failed: {type(e).__name__}: {e}",
        "generation_failed",
        etype="server_error",
    )


def stream_answer(
    job: Job,
    queue: asyncio.Queue,
    responder: Responder,
    include_usage: bool,
    interval_s: float = 0.0,
) -> StreamingResponse:
    """The answer as Server-Sent Events (`data: {...}` per chunk, then `data: [DONE]`).

    interval_s > 0 coalesces: at most one text event per interval, carrying every token
    that arrived meanwhile (a token after a quiet interval, the first one included, goes
    out at once; the last one as soon as it comes). The text is the same, in fewer events:
    each costs the server, a proxy in between (Ray Serve's) and the client alike.
    """

    def sse(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    async def events():
        try:
            for obj in responder.start():
                yield sse(obj)
            async for chunks in _coalesced(queue, interval_s):
                last = chunks[-1]
                failed = last.finish_reason == FINISH_ERROR
                texts = chunks[:-1] if failed else chunks
                if texts:  # one chunk with the text of all and the state of the last
                    merged = texts[-1]
                    if len(texts) > 1:
                        merged = dataclasses.replace(merged, text="".join(c.text for c in texts))
                    for obj in responder.events(merged):
                        yield sse(obj)
                if failed:
                    yield sse(
                        {
                            "error": {
                                "message": f"generation failed: {last.error}",
                                "type": "server_error",
                            }
                        }
                    )
                    break
                if last.finish_reason is not None:
                    for obj in responder.end(last, include_usage):
                        yield sse(obj)
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # client gone or stream over: the engine frees the slot

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _coalesced(queue: asyncio.Queue, interval_s: float):
    """Lists of chunks: one at a time without an interval; else whatever arrived until
    `interval_s` after the previous list went out (ends at a final chunk)."""
    loop = asyncio.get_running_loop()
    sent = -float("inf")
    while True:
        chunks = [await queue.get()]
        deadline = sent + interval_s
        while interval_s > 0 and chunks[-1].finish_reason is None:
            if not queue.empty():
                chunks.append(queue.get_nowait())
                continue
            wait = deadline - loop.time()
            if wait <= 0:
                break
            try:
                chunks.append(await asyncio.wait_for(queue.get(), wait))
            except asyncio.TimeoutError:
                break
        yield chunks
        sent = loop.time()
        if chunks[-1].finish_reason is not None:
            return
