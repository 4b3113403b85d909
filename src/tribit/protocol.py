"""The OpenAI protocol: completion and chat-completion responses and their stream chunks.

One `Responder` per request builds every object the client sees, from the generation's
chunks (anything with `text`, `finish_reason`, `usage` and the timing fields of
`tribit.generation.GenerationChunk`). The Python API (`create_completion`,
`create_chat_completion`) and the server both use it, so their answers have one shape:

- text completion: `text_completion` objects; a stream chunk per piece of text, the last
  carrying `finish_reason`.
- chat completion: `chat.completion`; a stream starts with the assistant role, then content
  deltas, then an empty delta with `finish_reason` (as OpenAI streams). A reply's leading
  blank (the word separator after a template's "Answer:") is not sent.
- `usage` (prompt, completion, total tokens) in the response, and in a last stream chunk
  with empty `choices` when the client asks (`stream_options.include_usage`).
- `timings` (llama-server's extension) when the responder is asked for it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

OBJECT = {False: "text_completion", True: "chat.completion"}
CHUNK_OBJECT = {False: "text_completion", True: "chat.completion.chunk"}


def timings(chunk: Any) -> dict[str, Any]:
    """llama-server's `timings` record of a finished generation."""
    n_prompt = chunk.prompt_tokens - chunk.prompt_cached_tokens
    return {
        "cache_n": chunk.prompt_cached_tokens,
        "prompt_n": n_prompt,
        "prompt_ms": round(chunk.prompt_time_s * 1000, 3),
        "prompt_per_second": round(chunk.prompt_tps, 3) if chunk.prompt_tps else None,
        "predicted_n": chunk.generation_tokens,
        "predicted_ms": round(chunk.generation_time_s * 1000, 3),
        "predicted_per_second": round(chunk.generation_tps, 3) if chunk.generation_tps else None,
        "queue_ms": round(chunk.queue_time_s * 1000, 3),
    }


@dataclass
class Responder:
    """Builds one request's response objects. chat: chat completion or text completion;
    model: the name reported; with_timings: add llama-server's `timings`."""

    chat: bool
    model: str
    with_timings: bool = False
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self._replied = False  # a chat reply's first character was seen

    def _reply_text(self, text: str) -> str:
        """A chat reply's text without the one blank it may start with: the word separator
        of a template that ends in "Answer:" (" Mary is in the kitchen."); completions keep
        every character."""
        if not self.chat or self._replied or not text:
            return text
        self._replied = True
        return text.removeprefix(" ")
        text = text.lstrip()
        self._replied = bool(text)
        return text

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    # -- one object ----------------------------------------------------------------
    def response(self, text: str, last: Any | None) -> dict[str, Any]:
        """The whole answer: `text`, finished by chunk `last` (None: nothing generated)."""
        finish = last.finish_reason if last is not None else "length"
        text = self._reply_text(text)
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        out = {**self._head(OBJECT[self.chat]), "choices": [choice], "usage": _usage(last)}
        if self.with_timings and last is not None:
            out["timings"] = timings(last)
        return out

    # -- a stream ------------------------------------------------------------------
    def start(self) -> list[dict[str, Any]]:
        """The chunks that open a stream (the assistant role of a chat)."""
        if not self.chat:
            return []
        return [self._chunk({"role": "assistant", "content": ""}, None)]

    def events(self, chunk: Any) -> list[dict[str, Any]]:
        """The stream chunks for one generation chunk (none for empty text)."""
        out = []
        if self.chat:
            text = self._reply_text(chunk.text)
            if text:
                out.append(self._chunk({"content": text}, None))
            if chunk.finish_reason is not None:
                out.append(self._chunk({}, chunk.finish_reason))
        elif chunk.text or chunk.finish_reason is not None:
            out.append(self._chunk(chunk.text, chunk.finish_reason))
        if chunk.finish_reason is not None and self.with_timings:
            out[-1]["timings"] = timings(chunk)
        return out

    def end(self, last: Any | None, include_usage: bool) -> list[dict[str, Any]]:
        """The chunks that close a stream: the usage, if the client asked for it."""
        if not include_usage:
            return []
        return [{**self._head(CHUNK_OBJECT[self.chat]), "choices": [], "usage": _usage(last)}]

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head(CHUNK_OBJECT[self.chat]), "choices": [choice]}


def _usage(last: Any | None) -> dict[str, int]:
    if last is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return dict(last.usage)
