"""Chat on top of `tribit.generate`: prompts from chat templates, multi-turn sessions that
reuse the KV cache, and OpenAI-shaped completions (the dicts llama-cpp-python returns).

Multi-turn reuse: every turn re-renders the whole conversation and tokenizes it; the
prompt cache of `tribit.generate` finds the longest prefix already in the slot's KV cache
(system prompt, earlier turns) and computes only the new tail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import TribitError
from .generate import (
    ContextLengthError,
    GenerationChunk,
    LogitsProcessor,
    make_sampling,
    stream_generate,
    tokenize_prompt,
)

ROLES = ("system", "user", "assistant", "tool")


# -- chat templates -----------------------------------------------------------------------
def chat_template(model) -> str | None:
    """The model's Jinja chat template, or None for the built-in BitNet 2B-4T format
    (no template in the file, or the "BITNET" placeholder that bitnet.cpp's converter
    writes and never renders)."""
    tmpl = model.metadata.get("tokenizer.chat_template")
    if not isinstance(tmpl, str) or not tmpl.strip() or "BITNET" in tmpl:
        return None
    return tmpl


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Check OpenAI-style messages and return plain {"role", "content"} dicts.

    `content` may be a string, None (empty) or a list of {"type": "text", "text": ...}
    parts, which are joined. Raises TribitError naming the bad message.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TribitError("messages must be a list of {'role': ..., 'content': ...} objects")
    if not messages:
        raise TribitError("messages is empty: give at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TribitError(f"messages[{i}] must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise TribitError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (
                    isinstance(part, Mapping)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    raise TribitError(
                        f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': str}}"
                    )
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise TribitError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": role, "content": content})
    return out


def _token_text(model, token_id: int | None) -> str:
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    if token_id is None or token_id < 0 or not tokens or token_id >= len(tokens):
        return ""
    return str(tokens[token_id])


def render_messages(
    model, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
) -> str:
    """The conversation as prompt text, with the model's chat template (sandboxed Jinja)."""
    from .tokenizer.chat import render_chat

    tok = model.tokenizer
    return render_chat(
        normalize_messages(messages),
        template=chat_template(model),
        add_generation_prompt=add_generation_prompt,
        bos_token=_token_text(model, tok.bos_id),
        eos_token=_token_text(model, tok.eos_id),
    )


def chat_tokens(
    model, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of the rendered conversation (BOS added once). Only the template's own
    markers become control tokens; message contents are encoded as plain text, so a user
    cannot fake a turn by writing `<|eot_id|>` (tokenizer.chat.encode_chat)."""
    from .tokenizer.chat import encode_chat

    tok = model.tokenizer
    return encode_chat(
        tok,
        normalize_messages(messages),
        template=chat_template(model),
        add_generation_prompt=add_generation_prompt,
        bos_token=_token_text(model, tok.bos_id),
        eos_token=_token_text(model, tok.eos_id),
    )


# -- multi-turn sessions -----------------------------------------------------------------
class ChatSession:
    """A conversation with one model slot; each turn computes only the new tokens.

    `sampling` holds stream_generate keyword arguments (temperature, top_k, max_tokens,
    stop, seed, ...) used for every turn; a turn may override them. When the conversation
    outgrows the context, the oldest turns (not the system prompt) are dropped if
    `drop_old_turns`, else ContextLengthError is raised.
    """

    def __init__(
        self,
        model,
        system: str | None = None,
        seq: int = 0,
        drop_old_turns: bool = True,
        **sampling: Any,
    ):
        self.model = model
        self.seq = seq
        self.drop_old_turns = drop_old_turns
        self.sampling = {"max_tokens": None, **sampling}
        self.messages: list[dict[str, str]] = []
        self.last: GenerationChunk | None = None  # final chunk (statistics) of the last turn
        self.reset(system)

    def reset(self, system: str | None = None) -> None:
        """Start a new conversation (the KV cache is reused as far as it still matches)."""
        self.messages = [{"role": "system", "content": system}] if system else []

    def stream(self, content: str, **overrides: Any) -> Iterator[GenerationChunk]:
        """Send a user message; yield the answer's chunks. The answer (as far as it got,
        also when the caller stops early or Ctrl-C interrupts it) joins the history."""
        self.messages.append({"role": "user", "content": content})
        kwargs = {**self.sampling, **overrides}
        try:
            tokens = self._fit(kwargs.get("max_tokens"))
            it = stream_generate(self.model, tokens, seq=self.seq, **kwargs)
        except BaseException:
            self.messages.pop()
            raise
        return self._run(it)

    def _run(self, it: Iterator[GenerationChunk]) -> Iterator[GenerationChunk]:
        pieces: list[str] = []
        try:
            for chunk in it:
                pieces.append(chunk.text)
                if chunk.finish_reason is not None:
                    self.last = chunk
                yield chunk
        finally:
            self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def send(self, content: str, **overrides: Any) -> str:
        """Send a user message; return the whole answer."""
        return "".join(c.text for c in self.stream(content, **overrides))

    def _fit(self, max_tokens: int | None) -> list[int]:
        n_ctx = int(self.model.n_ctx)
        room = min(n_ctx // 4, max_tokens if max_tokens and max_tokens > 0 else 256)
        while True:
            tokens = chat_tokens(self.model, self.messages)
            if len(tokens) + room <= n_ctx or not self.drop_old_turns:
                break
            first = 1 if self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:
                break  # only the new message is left: nothing more to drop
            del self.messages[first]  # the oldest message, then up to the next user turn
            while len(self.messages) - first > 1 and self.messages[first]["role"] != "user":
                del self.messages[first]
        if len(tokens) > n_ctx:
            raise ContextLengthError(len(tokens), n_ctx)
        return tokens


# -- OpenAI-shaped results ---------------------------------------------------------------
def _model_name(model) -> str:
    """The name reported in the `model` field: general.name, else the file name."""
    name = getattr(getattr(model, "config", None), "name", None)
    if name:
        return str(name)
    path = getattr(model, "path", None)
    return path.name if path is not None else "tribit"


def _usage(model, chunk: GenerationChunk | None, n_prompt: int) -> dict[str, int]:
    n_gen = chunk.generation_tokens if chunk is not None else 0
    if chunk is not None and chunk.token in model.tokenizer.eog_ids:
        n_gen -= 1  # the end-of-generation token is not part of the completion
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen}


_SAMPLING = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
)


def _start(model, tokens: list[int], args: dict[str, Any]) -> Iterator[GenerationChunk]:
    """stream_generate with the sampling arguments of a create_* call; extra logits
    processors run after the built ones (penalties, bias)."""
    kw = {k: args[k] for k in _SAMPLING}
    bias = kw["logit_bias"]
    if bias:  # OpenAI sends token ids as strings
        try:
            kw["logit_bias"] = {int(k): float(v) for k, v in bias.items()}
        except (TypeError, ValueError, AttributeError):
            raise TribitError("logit_bias must map token ids to numbers") from None
    sampler, processors = make_sampling(**kw)
    processors += list(args["logits_processors"] or ())
    return stream_generate(
        model,
        tokens,
        args["max_tokens"],
        stop=args["stop"],
        seq=args["seq"],
        sampler=sampler,
        logits_processors=processors,
    )


def create_completion(
    model,
    prompt: str | Sequence[int],
    stream: bool = False,
    max_tokens: int | None = 16,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 40,
    min_p: float = 0.05,
    typical_p: float = 1.0,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[Any, float] | None = None,
    seed: int | None = None,
    stop: Sequence[str] | str | None = None,
    seq: int = 0,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    include_usage: bool = False,
    model_name: str | None = None,
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """A text completion shaped like OpenAI's (and llama-cpp-python's) `text_completion`.

    Defaults are llama-cpp-python's. stream=True returns an iterator of chunk dicts; with
    include_usage a last chunk with empty choices carries the usage (OpenAI's
    stream_options.include_usage). Errors (bad prompt, ContextLengthError) are raised by
    this call, before any chunk.
    """
    tokens = tokenize_prompt(model, prompt)
    it = _start(model, tokens, locals())
    head = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_name or _model_name(model),
    }
    if stream:
        return _completion_chunks(model, it, head, len(tokens), include_usage)
    texts, last = [], None
    for chunk in it:
        texts.append(chunk.text)
        last = chunk
    choice = {
        "text": "".join(texts),
        "index": 0,
        "logprobs": None,
        "finish_reason": last.finish_reason if last else "length",
    }
    return {**head, "choices": [choice], "usage": _usage(model, last, len(tokens))}


def _completion_chunks(model, it, head, n_prompt, include_usage) -> Iterator[dict[str, Any]]:
    last = None
    for chunk in it:
        last = chunk
        if chunk.text or chunk.finish_reason:
            choice = {
                "text": chunk.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": chunk.finish_reason,
            }
            yield {**head, "choices": [choice]}
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(model, last, n_prompt)}


def create_chat_completion(
    model,
    messages: Sequence[Mapping[str, Any]],
    stream: bool = False,
    max_tokens: int | None = None,
    temperature: float = 0.2,
    top_p: float = 0.95,
    top_k: int = 40,
    min_p: float = 0.05,
    typical_p: float = 1.0,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[Any, float] | None = None,
    seed: int | None = None,
    stop: Sequence[str] | str | None = None,
    seq: int = 0,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    include_usage: bool = False,
    model_name: str | None = None,
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """A chat completion shaped like OpenAI's `chat.completion` (llama-cpp-python's
    defaults). The conversation is rendered with the model's chat template; the prompt
    cache makes a follow-up request that repeats the history compute only the new turn.
    stream=True returns an iterator of `chat.completion.chunk` dicts: first the role,
    then content deltas, then an empty delta with finish_reason (then usage if asked).
    """
    tokens = chat_tokens(model, messages)
    it = _start(model, tokens, locals())
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": model_name or _model_name(model),
    }
    if stream:
        return _chat_chunks(model, it, head, len(tokens), include_usage)
    texts, last = [], None
    for chunk in it:
        texts.append(chunk.text)
        last = chunk
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(texts)},
        "logprobs": None,
        "finish_reason": last.finish_reason if last else "length",
    }
    return {
        **head,
        "object": "chat.completion",
        "choices": [choice],
        "usage": _usage(model, last, len(tokens)),
    }


def _chat_chunks(model, it, head, n_prompt, include_usage) -> Iterator[dict[str, Any]]:
    head = {**head, "object": "chat.completion.chunk"}

    def one(delta: dict, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    yield one({"role": "assistant", "content": ""}, None)
    last = None
    for chunk in it:
        last = chunk
        if chunk.text:
            yield one({"content": chunk.text}, None)
        if chunk.finish_reason:
            yield one({}, chunk.finish_reason)
    if include_usage:
        yield {**head, "choices": [], "usage": _usage(model, last, n_prompt)}
