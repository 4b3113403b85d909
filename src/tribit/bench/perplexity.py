"""Perplexity as llama.cpp's `llama-perplexity` computes it.

Default (no stride): the token stream is cut into `n_chunk = len // n_ctx` chunks of n_ctx
tokens; each chunk is evaluated from an empty cache (its first token replaced by BOS when the
model adds one) and only the second half is scored: logits at positions j = n_ctx/2 ..
n_ctx-2 predict token j+1. PPL = exp(mean NLL) over all scored tokens, and the ± estimate is
llama.cpp's: PPL * sqrt(var(NLL) / (count - 1)).

With `stride` (llama.cpp's --ppl-stride): windows of n_ctx tokens start every `stride` tokens
and the last `stride` predictions of each window are scored.

The scoring is written against a `chunk_logits(tokens, want) -> rows` callable, so the same
code scores the native model and the numpy oracle (tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tribit.errors import TribitError

# (window tokens, bool mask of rows wanted) -> float logits (mask.sum(), n_vocab), in order
ChunkLogits = Callable[[list[int], np.ndarray], np.ndarray]


@dataclass
class PerplexityResult:
    """Outcome of a perplexity run."""

    ppl: float
    ppl_err: float  # llama.cpp's ± estimate (nan with fewer than 2 scored tokens)
    nll: float  # mean negative log-likelihood (nats)
    n_scored: int
    n_chunks: int
    n_ctx: int
    stride: int | None
    n_tokens: int  # tokens in the text
    chunk_ppl: list[float] = field(default_factory=list)  # running PPL after each chunk
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def plan_windows(n_tokens: int, n_ctx: int, stride: int | None = None) -> list[tuple[int, int]]:
    """(start, first scored row) of every window, as llama-perplexity chooses them.

    Row j of a window predicts token start + j + 1; rows first .. n_ctx-2 are scored.
    """
    if n_ctx < 4:
        raise TribitError(f"context size must be >= 4, got {n_ctx}")
    if stride is None or stride <= 0:
        n_chunk = n_tokens // n_ctx
        return [(i * n_ctx, n_ctx // 2) for i in range(n_chunk)]
    if stride >= n_ctx:
        raise TribitError(f"stride must be < the context size ({n_ctx}), got {stride}")
    n_chunk = max(0, (n_tokens - n_ctx + stride - 1) // stride)
    return [(i * stride, n_ctx - stride - 1) for i in range(n_chunk)]


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) per row, in float64 (max-subtracted, like llama.cpp)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return z[np.arange(z.shape[0]), targets] - lse


def perplexity(
    tokens: Sequence[int],
    chunk_logits: ChunkLogits,
    n_ctx: int,
    stride: int | None = None,
    bos_id: int | None = None,
    max_chunks: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """Perplexity of `tokens` scored window by window with `chunk_logits`.

    bos_id: when given, the first token of every window is replaced by it (llama.cpp does this
    when the vocabulary adds BOS). progress(done, total, running_ppl) is called per window.
    """
    import time

    toks = [int(t) for t in tokens]
    windows = plan_windows(len(toks), n_ctx, stride)
    if max_chunks is not None and max_chunks > 0:
        windows = windows[:max_chunks]
    if not windows:
        need = n_ctx if not stride else n_ctx + 1
        raise TribitError(
            f"the text has {len(toks)} tokens; at least {need} are needed for context {n_ctx}"
        )
    t0 = time.perf_counter()
    s1 = s2 = 0.0
    count = 0
    running: list[float] = []
    for i, (start, first) in enumerate(windows):
        window = toks[start : start + n_ctx]
        targets = np.asarray(toks[start + first + 1 : start + n_ctx], dtype=np.int64)
        if bos_id is not None:
            window[0] = bos_id
        want = np.zeros(n_ctx, dtype=bool)
        want[first : n_ctx - 1] = True
        rows = chunk_logits(window, want)
        if rows.shape[0] != targets.size:
            raise TribitError(f"chunk_logits returned {rows.shape[0]} rows, {targets.size} wanted")
        if targets.size and (targets.min() < 0 or targets.max() >= rows.shape[1]):
            raise TribitError(f"token ids out of range for a vocabulary of {rows.shape[1]}")
        nll = -log_softmax_at(rows, targets)
        s1 += float(nll.sum())
        s2 += float((nll * nll).sum())
        count += nll.size
        running.append(_exp(s1 / count))
        if progress:
            progress(i + 1, len(windows), running[-1])
    mean = s1 / count
    ppl = _exp(mean)
    var = s2 / count - mean * mean
    err = ppl * math.sqrt(var / (count - 1)) if count > 1 and var > 0 else float("nan")
    return PerplexityResult(
        ppl=ppl,
        ppl_err=err,
        nll=mean,
        n_scored=count,
        n_chunks=len(windows),
        n_ctx=n_ctx,
        stride=stride if stride and stride > 0 else None,
        n_tokens=len(toks),
        chunk_ppl=running,
        seconds=time.perf_counter() - t0,
    )


def model_chunk_logits(model, batch: int | None = None) -> ChunkLogits:
    """`chunk_logits` for a loaded `tribit.Model`: the window runs in batches of `batch`
    tokens (default: all at once) from an empty cache; only the wanted rows get logits."""

    def run(window: list[int], want: np.ndarray) -> np.ndarray:
        n = len(window)
        b = n if not batch or batch <= 0 else int(batch)
        model.reset(0)
        out = []
        try:
            for s in range(0, n, b):
                e = min(n, s + b)
                mask = want[s:e]
                if mask.any():
                    out.append(model.forward(window[s:e], s, 0, logits=mask.tolist()))
                else:  # nothing to score here: fill the cache, skip the head
                    model.forward(window[s:e], s, 0, logits=[False] * (e - s))
        finally:
            model.reset(0)
        return np.concatenate(out, axis=0)

    return run


def model_perplexity(
    model,
    text: str | None = None,
    tokens: Sequence[int] | None = None,
    n_ctx: int | None = None,
    stride: int | None = None,
    batch: int | None = None,
    max_chunks: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """Perplexity of a text (tokenized with the model's tokenizer, BOS first when it adds one)
    or of given tokens, with the native model. n_ctx defaults to min(512, model n_ctx)."""
    if (text is None) == (tokens is None):
        raise TribitError("give exactly one of text or tokens")
    bos_id = None
    if text is not None:
        tok = model.tokenizer
        add_bos = bool(tok.add_bos) and tok.bos_id is not None
        tokens = model.tokenize(text, add_bos=add_bos)
        bos_id = tok.bos_id if add_bos else None
    c = int(n_ctx or min(512, model.n_ctx))
    if c > model.n_ctx:
        raise TribitError(f"context {c} is larger than the model was loaded with ({model.n_ctx})")
    return perplexity(
        tokens,
        model_chunk_logits(model, batch),
        c,
        stride=stride,
        bos_id=bos_id,
        max_chunks=max_chunks,
        progress=progress,
    )
