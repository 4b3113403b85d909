"""OpenAI-shaped completions from Python, as llama-cpp-python returns them.

`create_completion` and `create_chat_completion` run one generation (`stream_generate`)
and shape it with `protocol.Responder`, the builder the server uses too, so the library
and the server give the same objects for the same request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .chat import chat_prompt_tokens
from .generation import GenerationChunk, LogitsProcessor, stream_generate, tokenize_prompt
from .protocol import Responder
from .sampling import SamplerParams, make_logits_processors, make_sampler

# llama-cpp-python's defaults
COMPLETION_SAMPLING = SamplerParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)
CHAT_SAMPLING = SamplerParams(temperature=0.2, top_k=40, top_p=0.95, min_p=0.05)


def reported_name(model) -> str:
    """The name reported in the `model` field: general.name, else the file name."""
    name = getattr(getattr(model, "config", None), "name", None)
    if name:
        return str(name)
    path = getattr(model, "path", None)
    return path.name if path is not None else "tribit"


def create_completion(
    model,
    prompt: str | Sequence[int],
    stream: bool = False,
    max_tokens: int | None = 16,
    *,
    stop: Sequence[str] | str | None = None,
    sampling: SamplerParams | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    seq: int | None = None,
    include_usage: bool = False,
    model_name: str | None = None,
    **params: Any,
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """A text completion shaped like OpenAI's (and llama-cpp-python's) `text_completion`.

    Sampling: `sampling` (default: llama-cpp-python's, temperature 0.8, top_k 40, top_p
    0.95, min_p 0.05) with any SamplerParams field given as a keyword (temperature=0,
    seed=1, logit_bias={"65": 5}, ...); extra `logits_processors` run after the built ones.
    stream=True returns an iterator of chunk dicts; with include_usage a last chunk with
    empty choices carries the usage. Errors (bad prompt, ContextLengthError) are raised
    by this call, before any chunk.
    """
    tokens = tokenize_prompt(model, prompt)
    responder = Responder(chat=False, model=model_name or reported_name(model))
    chunks = _generate(
        model,
        tokens,
        max_tokens,
        stop,
        sampling or COMPLETION_SAMPLING,
        params,
        logits_processors,
        seq,
    )
    return _shape(responder, chunks, stream, include_usage)


def create_chat_completion(
    model,
    messages: Sequence[Mapping[str, Any]],
    stream: bool = False,
    max_tokens: int | None = None,
    *,
    stop: Sequence[str] | str | None = None,
    sampling: SamplerParams | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    seq: int | None = None,
    include_usage: bool = False,
    model_name: str | None = None,
    **params: Any,
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    """A chat completion shaped like OpenAI's `chat.completion` (llama-cpp-python's
    defaults: temperature 0.2, top_k 40, top_p 0.95, min_p 0.05). The conversation is
    rendered with the model's chat template; a follow-up request that repeats the history
    computes only the new turn (the slot still holds the rest). stream=True returns an
    iterator of `chat.completion.chunk` dicts: the role, content deltas, an empty delta
    with finish_reason, then the usage if asked.
    """
    tokens = chat_prompt_tokens(model, messages)
    responder = Responder(chat=True, model=model_name or reported_name(model))
    chunks = _generate(
        model, tokens, max_tokens, stop, sampling or CHAT_SAMPLING, params, logits_processors, seq
    )
    return _shape(responder, chunks, stream, include_usage)


def _generate(
    model, tokens, max_tokens, stop, sampling: SamplerParams, params, extra, seq
) -> Iterator[GenerationChunk]:
    sampling = sampling.replace(**params) if params else sampling
    processors = make_logits_processors(sampling) + list(extra or ())
    return stream_generate(
        model,
        tokens,
        max_tokens,
        sampler=make_sampler(sampling),
        logits_processors=processors,
        stop=stop,
        seq=seq,
    )


def _shape(
    responder: Responder, chunks: Iterator[GenerationChunk], stream: bool, include_usage: bool
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    if stream:
        return _stream(responder, chunks, include_usage)
    texts, last = [], None
    for chunk in chunks:
        texts.append(chunk.text)
        last = chunk
    return responder.response("".join(texts), last)


def _stream(
    responder: Responder, chunks: Iterator[GenerationChunk], include_usage: bool
) -> Iterator[dict[str, Any]]:
    yield from responder.start()
    last = None
    for chunk in chunks:
        last = chunk
        yield from responder.events(chunk)
    yield from responder.end(last, include_usage)
