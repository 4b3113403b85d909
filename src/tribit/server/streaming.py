"""Delivering a job's chunks to its client: one JSON answer, or a Server-Sent Events stream.

Both watch the client: when it leaves, the job is cancelled and its slot freed at once
(a non-streaming client that gives up would otherwise keep a slot busy for the whole
answer).
"""

from __future__ import annotations

import asyncio
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
    return error(500, f"generation failed: {type(e).__name__}: {e}", "generation_failed",
                 etype="server_error")


def stream_answer(job: Job, queue: asyncio.Queue, responder: Responder,
                  include_usage: bool) -> StreamingResponse:
    """The answer as Server-Sent Events (`data: {...}` per chunk, then `data: [DONE]`)."""

    def sse(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj)}\n\n"

    async def events():
        try:
            for obj in responder.start():
                yield sse(obj)
            while True:
                chunk = await queue.get()
                if chunk.finish_reason == FINISH_ERROR:
                    e = chunk.error
                    yield sse({"error": {"message": f"generation failed: {e}",
                                         "type": "server_error"}})
                    break
                for obj in responder.events(chunk):
                    yield sse(obj)
                if chunk.finish_reason is not None:
                    for obj in responder.end(chunk, include_usage):
                        yield sse(obj)
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # client gone or stream over: the engine frees the slot

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
