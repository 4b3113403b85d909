"""Text generation: `generate_step` (token ids) -> `stream_generate` (text pieces with
statistics) -> `generate` (a string).

A sampler is a callable `logits -> token id`; a logits processor is a callable
`(tokens, logits) -> logits` where `tokens` is the whole sequence so far (prompt and
generated ids) and `logits` a float32 vector of n_vocab. Both come from `tribit.sampling`;
with no sampler, decoding is greedy (argmax).

Prompt cache: for each model and sequence slot this module remembers which token ids the
slot's KV cache holds. A new prompt that starts with the same tokens (the history of a
chat, a fixed instruction prefix) only has its new tail computed. This relies on nobody
else writing to the slot; if you call `model.forward` on a slot yourself, pass
`reuse_cache=False` once or call `forget_cache(model, seq)`.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TribitError

Sampler = Callable[[np.ndarray], int]
LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


class ContextLengthError(TribitError, ValueError):
    """The prompt does not fit in the model's context (n_ctx positions per sequence).

    Carries `n_prompt_tokens` and `n_ctx`, like llama-server's `exceed_context_size_error`.
    """

    def __init__(self, n_prompt_tokens: int, n_ctx: int):
        super().__init__(
            f"the prompt has {n_prompt_tokens} tokens, more than the context size n_ctx="
            f"{n_ctx}; shorten it or load the model with a larger n_ctx"
        )
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx


# -- prompt cache bookkeeping -------------------------------------------------------------
# model -> {seq: token ids whose K/V are in that slot, in order}. Weak keys: a model that
# is garbage-collected takes its record with it.
_SLOTS: weakref.WeakKeyDictionary[Any, dict[int, list[int]]] = weakref.WeakKeyDictionary()


def cached_tokens(model, seq: int = 0) -> list[int]:
    """The token ids this module believes slot `seq` of `model` holds (a copy)."""
    return list(_slot_record(model, seq))


def forget_cache(model, seq: int | None = None) -> None:
    """Forget (and clear) what a slot holds; None: every slot."""
    slots = _SLOTS.get(model, {})
    if seq is None:
        slots.clear()
        model.reset(None)
    else:
        slots.pop(seq, None)
        model.reset(seq)


def _slot_record(model, seq: int) -> list[int]:
    rec = _SLOTS.setdefault(model, {}).setdefault(seq, [])
    # The cache may have been trimmed or reset behind our back (model.logits, model.reset):
    # only the first n_past entries can still be ours.
    n_past = model.n_past(seq)
    if n_past < len(rec):
        del rec[n_past:]
    return rec


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# -- token level -------------------------------------------------------------------------
def generate_step(
    model,
    tokens: Sequence[int],
    sampler: Sampler | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    seq: int = 0,
    reuse_cache: bool = True,
) -> Iterator[int]:
    """Yield generated token ids, one per step, without end.

    The prompt is prefilled with one forward over all its tokens (only the part not
    already in slot `seq`'s cache when `reuse_cache`), then each yielded token is fed
    back with one single-token forward when the next one is asked for. Stops (returns)
    when the context is full: the last yielded token then had no room left.
    The prompt is checked by this call (not at the first `next`): empty raises
    TribitError, longer than n_ctx ContextLengthError.
    """
    prompt = [int(t) for t in tokens]
    if not prompt:
        raise TribitError("the prompt is empty: give at least one token")
    if len(prompt) > model.n_ctx:
        raise ContextLengthError(len(prompt), int(model.n_ctx))
    return _steps(model, prompt, sampler, list(logits_processors or ()), seq, reuse_cache, {})


def _steps(model, prompt, sampler, processors, seq, reuse_cache, info) -> Iterator[int]:
    # info["n_cached"]: prompt tokens taken from the cache (set at the prefill)
    n_ctx = int(model.n_ctx)
    rec = _slot_record(model, seq)
    # Keep at least one prompt token to compute: its logits give the first new token.
    n_keep = min(common_prefix(rec, prompt), len(prompt) - 1) if reuse_cache else 0
    if n_keep:
        model.trim(seq, n_keep)
    else:
        model.reset(seq)
    del rec[n_keep:]
    info["n_cached"] = n_keep
    logits = model.forward(prompt[n_keep:], pos=n_keep, seq=seq, logits="last")[0]
    rec.extend(prompt[n_keep:])
    history = list(prompt)
    while True:
        for proc in processors:
            logits = proc(history, logits)
        tok = int(sampler(logits)) if sampler is not None else int(np.argmax(logits))
        history.append(tok)
        yield tok
        if len(rec) >= n_ctx:
            return  # no position left to feed `tok`
        logits = model.forward([tok], pos=len(rec), seq=seq, logits="last")[0]
        rec.append(tok)


# -- text level --------------------------------------------------------------------------
@dataclass
class GenerationChunk:
    """One step of `stream_generate`: the text a token completed, and running statistics.

    `text` may be empty (an incomplete UTF-8 sequence, or text held back because it might
    start a stop string). The last chunk has `finish_reason` "stop" (end-of-generation
    token or stop string) or "length" (max_tokens or context full).
    """

    text: str
    token: int
    finish_reason: str | None = None
    prompt_tokens: int = 0  # tokens in the prompt
    prompt_cached_tokens: int = 0  # of which reused from the KV cache (not computed)
    prompt_time_s: float = 0.0
    prompt_tps: float = 0.0  # computed prompt tokens per second
    generation_tokens: int = 0
    generation_time_s: float = 0.0  # from the first generated token to this one
    generation_tps: float = 0.0


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back any tail that could
    still become one (so the stop text itself is never emitted)."""

    def __init__(self, stops: Sequence[str] | str | None):
        if isinstance(stops, str):
            stops = [stops]
        if not all(isinstance(s, str) for s in stops or ()):
            raise TribitError(f"stop must be a string or a list of strings, got {stops!r}")
        self.stops = [s for s in (stops or ()) if s]
        self._buf = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop string was found)."""
        if not self.stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        hold = 0
        for s in self.stops:
            # longest suffix of buf that is a proper prefix of s
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self._buf = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """The held-back text (generation ended without completing a stop string)."""
        out, self._buf = self._buf, ""
        return out


def make_sampling(
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
    seed: int | None = None,
) -> tuple[Sampler, list[LogitsProcessor]]:
    """Build a sampler and the logits processors from llama.cpp-style parameters."""
    from .sampling import SamplerParams, make_logits_processors, make_sampler

    params = SamplerParams(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        typical_p=typical_p,
        repeat_penalty=repeat_penalty,
        repeat_last_n=repeat_last_n,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        logit_bias=dict(logit_bias) if logit_bias else None,
        seed=seed,
    )
    return make_sampler(params), list(make_logits_processors(params))


def tokenize_prompt(model, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of a prompt: a string is encoded with the model's tokenizer (BOS as the
    file asks, special-token text such as `<|eot_id|>` parsed as in llama.cpp)."""
    if isinstance(prompt, str):
        tok = model.tokenizer
        return list(tok.encode(prompt, add_bos=bool(tok.add_bos), special=True))
    return [int(t) for t in prompt]


def stream_generate(
    model,
    prompt: str | Sequence[int],
    max_tokens: int | None = 256,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
    seed: int | None = None,
    stop: Sequence[str] | str | None = None,
    sampler: Sampler | None = None,
    logits_processors: Sequence[LogitsProcessor] | None = None,
    seq: int = 0,
    reuse_cache: bool = True,
) -> Iterator[GenerationChunk]:
    """Generate from `prompt` (text or token ids), yielding one GenerationChunk per token.

    Defaults decode greedily (temperature 0). max_tokens None or < 0: until an
    end-of-generation token (tokenizer eog_ids), a stop string, or the context is full.
    An explicit `sampler` / `logits_processors` replace the ones built from the
    parameters. The prompt is checked before this returns: an empty prompt raises
    TribitError, one longer than n_ctx ContextLengthError (not at the first `next`).
    """
    tokens = tokenize_prompt(model, prompt)
    if not tokens:
        raise TribitError("the prompt is empty: give at least one token")
    if len(tokens) > model.n_ctx:
        raise ContextLengthError(len(tokens), int(model.n_ctx))
    if sampler is None or logits_processors is None:
        built = make_sampling(
            temperature,
            top_k,
            top_p,
            min_p,
            typical_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            seed,
        )
        sampler = built[0] if sampler is None else sampler
        logits_processors = built[1] if logits_processors is None else logits_processors
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer))
    ):
        raise TribitError(f"max_tokens must be an integer or None, got {max_tokens!r}")
    limit = None if max_tokens is None or max_tokens < 0 else int(max_tokens)
    stopper = StopMatcher(stop)
    return _stream(model, tokens, limit, sampler, logits_processors, stopper, seq, reuse_cache)


def _stream(model, tokens, limit, sampler, processors, stopper, seq, reuse_cache):
    from .tokenizer import StreamDecoder

    eog = set(model.tokenizer.eog_ids)
    decoder = StreamDecoder(model.tokenizer, skip_special=True)  # as llama-cli prints
    n_ctx = int(model.n_ctx)
    stats = GenerationChunk("", -1, prompt_tokens=len(tokens))

    def final_text() -> tuple[str, str]:
        # what the decoder and the stop matcher still hold, and the finish reason
        rest, stopped = stopper.push(decoder.flush())
        return (rest, FINISH_STOP) if stopped else (rest + stopper.flush(), FINISH_LENGTH)

    if limit == 0:
        yield _chunk(stats, "", -1, FINISH_LENGTH)
        return
    t0 = time.perf_counter()
    info: dict[str, int] = {}
    steps = _steps(model, tokens, sampler, list(processors or ()), seq, reuse_cache, info)
    t_first = t0
    n = 0
    try:
        for token in steps:
            now = time.perf_counter()
            n += 1
            if n == 1:
                t_first = now
                stats.prompt_time_s = now - t0
                stats.prompt_cached_tokens = info["n_cached"]
                computed = len(tokens) - info["n_cached"]
                stats.prompt_tps = computed / stats.prompt_time_s if stats.prompt_time_s else 0.0
            stats.generation_tokens = n
            stats.generation_time_s = now - t_first
            if n > 1 and stats.generation_time_s > 0:
                stats.generation_tps = (n - 1) / stats.generation_time_s
            if token in eog:
                yield _chunk(stats, final_text()[0], token, FINISH_STOP)
                return
            text, stopped = stopper.push(decoder.push(token))
            if stopped:
                yield _chunk(stats, text, token, FINISH_STOP)
                return
            # the last token: max_tokens reached, or no position left to feed it
            if (limit is not None and n >= limit) or len(tokens) + n - 1 >= n_ctx:
                rest, finish = final_text()
                yield _chunk(stats, text + rest, token, finish)
                return
            yield _chunk(stats, text, token, None)
    finally:
        steps.close()


def _chunk(stats: GenerationChunk, text: str, token: int, finish: str | None) -> GenerationChunk:
    return GenerationChunk(
        text=text,
        token=token,
        finish_reason=finish,
        prompt_tokens=stats.prompt_tokens,
        prompt_cached_tokens=stats.prompt_cached_tokens,
        prompt_time_s=stats.prompt_time_s,
        prompt_tps=stats.prompt_tps,
        generation_tokens=stats.generation_tokens,
        generation_time_s=stats.generation_time_s,
        generation_tps=stats.generation_tps,
    )


def generate(model, prompt: str | Sequence[int], **kwargs: Any) -> str:
    """The whole continuation of `prompt` as one string (arguments of stream_generate)."""
    return "".join(c.text for c in stream_generate(model, prompt, **kwargs))
