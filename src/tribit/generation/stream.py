"""One generation at a time: `generate_step` (token ids) -> `stream_generate` (text pieces
with statistics) -> `generate` (a string). Each is a batch of one on `BatchGenerator`.

Sampling: pass a `SamplerParams` as `sampling`, or its fields as keywords
(`temperature=0.7, top_k=40, seed=1`), or an explicit `sampler` (a callable
`logits -> token id`) and `logits_processors` (callables `(tokens, logits) -> logits`,
`tokens` being the whole sequence so far). With none of these, decoding is greedy.

Prompt reuse: the model records which tokens each KV slot holds (`Model.cached_tokens`);
a new prompt that starts with tokens a slot already holds (the history of a chat, a fixed
instruction) only has its new tail computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..sampling import SamplerParams
from .batch import (
    BatchGenerator,
    GenerationChunk,
    LogitsProcessor,
    Sampler,
    check_max_tokens,
    check_prompt,
)


def tokenize_prompt(model, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of a prompt: a string is encoded with the model's tokenizer (BOS as the
    file asks, special-token text such as `<|eot_id|>` parsed as in llama.cpp)."""
    if isinstance(prompt, str):
        tok = model.tokenizer
        return list(tok.encode(prompt, add_bos=bool(tok.add_bos), special=True))
    return [int(t) for t in prompt]


def sampling_params(sampling: SamplerParams | None = None, **fields: Any) -> SamplerParams:
    """`sampling` (default: greedy) with the given fields changed (unknown: TypeError)."""
    base = sampling if sampling is not None else SamplerParams()
    return base.replace(**fields) if fields else base


def generate_step(
    model,
    tokens: Sequence[int],
    sampler: Sampler | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    seq: int | None = 0,
    reuse_cache: bool = True,
) -> Iterator[int]:
    """Yield generated token ids, one per step, without end (end-of-generation tokens are
    ordinary tokens here); stops when the context is full.

    The prompt is checked by this call (empty: TribitError, longer than n_ctx:
    ContextLengthError), not at the first `next`. The slot is claimed at the first `next`
    and released when the iterator ends or is closed.
    """
    prompt = check_prompt(model, tokens)
    kw = dict(
        sampler=sampler,
        logits_processors=logits_processors,
        seq=seq,
        reuse_cache=reuse_cache,
        stop_at_eog=False,
        detokenize=False,
    )
    return (c.token for c in _run_one(model, prompt, kw))


def stream_generate(
    model,
    prompt: str | Sequence[int],
    max_tokens: int | None = 256,
    *,
    sampling: SamplerParams | None = None,
    sampler: Sampler | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    stop: Sequence[str] | str | None = None,
    seq: int | None = 0,
    reuse_cache: bool = True,
    **params: Any,
) -> Iterator[GenerationChunk]:
    """Generate from `prompt` (text or token ids), yielding one GenerationChunk per token.

    max_tokens None or < 0: until an end-of-generation token (tokenizer eog_ids), a stop
    string, or the context is full. Sampling as the module says (`**params`: fields of
    SamplerParams). seq: the KV slot (None: the free one holding the longest prefix of
    the prompt). Errors in the arguments or the prompt are raised by this call, before
    the first chunk.
    """
    tokens = check_prompt(model, tokenize_prompt(model, prompt))
    kw = dict(
        max_tokens=check_max_tokens(max_tokens),
        sampling=sampling_params(sampling, **params),
        sampler=sampler,
        logits_processors=logits_processors,
        stop=stop,
        seq=seq,
        reuse_cache=reuse_cache,
    )
    if kw["sampling"] is not None:
        kw["sampling"].validate()
    from .stop import StopMatcher

    StopMatcher(stop)  # a bad stop argument fails here, not at the first `next`
    return _run_one(model, tokens, kw)


def generate(model, prompt: str | Sequence[int], **kwargs: Any) -> str:
    """The whole continuation of `prompt` as one string (arguments of stream_generate)."""
    return "".join(c.text for c in stream_generate(model, prompt, **kwargs))


def _run_one(model, prompt: list[int], kw: dict[str, Any]) -> Iterator[GenerationChunk]:
    """Drive a batch of one; a failed step raises the sequence's error."""
    batch = BatchGenerator(model)
    try:
        batch.insert(prompt, **kw)
        while len(batch):
            for chunk in batch.step():
                if chunk.error is not None:
                    raise chunk.error
                yield chunk
    finally:
        batch.close()
