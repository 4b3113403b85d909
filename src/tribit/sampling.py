"""Token sampling, llama.cpp style.

A logits processor is a callable `(tokens, logits) -> logits` (tokens: the ids so far, prompt
included); a sampler is a callable `logits -> token id`. The default chain is llama.cpp's
(common/sampling.cpp, default sampler order):

    processors: logit bias -> penalties (repeat / frequency / presence over the last
                repeat_last_n tokens)
    sampler:    top-k -> typical-p -> top-p -> min-p -> temperature -> draw from the softmax

llama.cpp adds the logit-bias sampler in front of the configurable chain, so bias comes before
the penalties. Truncations see the untempered distribution; temperature only reshapes what
survives. temperature <= 0 is greedy: argmax of the processed logits, ties to the lowest id.
The draw uses a seeded `numpy.random.Generator`, so a seed reproduces a run (not llama.cpp's
std::mt19937 stream).

Semantics per step (candidates sorted by logit, ties by id):
- repeat penalty: for each token seen in the window, logit / penalty if logit > 0 else
  logit * penalty; then logit -= count * frequency_penalty + presence_penalty.
- top-k: keep the k highest (k <= 0: off).
- typical-p: order by |-log p - entropy|, keep until the cumulative probability exceeds p.
- top-p: keep the smallest prefix whose cumulative probability reaches p (p >= 1: off).
- min-p: keep tokens with p >= min_p * p_max (min_p <= 0: off).
- min_keep: every truncation keeps at least this many tokens (at least 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import TribitError

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]
Sampler = Callable[[np.ndarray], int]


@dataclass
class SamplerParams:
    """llama.cpp-style sampling parameters (defaults: greedy, nothing else active).

    The one record of how to sample: the Python API, the CLI and the server each build it
    once and hand it (or the sampler built from it) down. logit_bias keys may be token ids
    as strings, as OpenAI clients send them.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64  # -1: the whole history
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = field(default=None)
    seed: int | None = None
    min_keep: int = 1

    def __post_init__(self) -> None:
        if self.logit_bias:
            try:
                self.logit_bias = {_token_key(k): v for k, v in self.logit_bias.items()}
            except AttributeError:
                raise TribitError("logit_bias must map token ids to numbers") from None

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> SamplerParams:
        """A copy with some parameters changed; an unknown name is a TypeError."""
        unknown = set(changes) - set(self.fields())
        if unknown:
            raise TypeError(
                f"unknown sampling parameter(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(self.fields())}"
            )
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise TribitError naming the first bad parameter."""
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "frequency_penalty",
            "presence_penalty",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise TribitError(f"{name} must be a number, got {v!r}")
            if not math.isfinite(float(v)):
                raise TribitError(f"{name} must be finite, got {v!r}")
        for name in ("top_k", "repeat_last_n", "min_keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TribitError(f"{name} must be an integer, got {v!r}")
        if self.repeat_penalty <= 0:
            raise TribitError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < -1:
            raise TribitError(f"repeat_last_n must be >= -1, got {self.repeat_last_n}")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, (int, np.integer))
            or self.seed < 0
        ):
            raise TribitError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        for k, v in (self.logit_bias or {}).items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                raise TribitError(f"logit_bias key {k!r} is not a token id")
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or math.isnan(v):
                raise TribitError(f"logit_bias[{k}] must be a number, got {v!r}")


def _token_key(k: Any) -> Any:
    # "65" -> 65 (OpenAI's JSON keys); anything else is left for validate() to name
    if isinstance(k, str):
        if not (k.isascii() and k.strip().isdigit()):
            raise TribitError(f"logit_bias key {k!r} is not a token id")
        return int(k)
    return k


# -- logits processors -----------------------------------------------------------------------
class LogitBias:
    """Adds fixed values to chosen logits (-inf bans a token)."""

    def __init__(self, bias: Mapping[int, float]) -> None:
        self.ids = np.array(list(bias.keys()), dtype=np.int64)
        self.values = np.array(list(bias.values()), dtype=np.float32)

    def __call__(self, tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
        out = np.array(logits, dtype=np.float32, copy=True)
        if self.ids.size and self.ids.max() >= out.shape[-1]:
            raise TribitError(
                f"logit_bias names token {int(self.ids.max())}, the vocabulary has {out.shape[-1]}"
            )
        np.add.at(out.reshape(-1, out.shape[-1]), (slice(None), self.ids), self.values)
        return out


class Penalties:
    """Repeat, frequency and presence penalties over the last `last_n` tokens (llama.cpp)."""

    def __init__(self, last_n: int, repeat: float, frequency: float, presence: float) -> None:
        self.last_n, self.repeat = last_n, repeat
        self.frequency, self.presence = frequency, presence

    def __call__(self, tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
        if self.last_n == 0 or len(tokens) == 0:
            return logits
        window = tokens if self.last_n < 0 else tokens[-self.last_n :]
        ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
        out = np.array(logits, dtype=np.float32, copy=True)
        flat = out.reshape(-1, out.shape[-1])
        keep = (ids >= 0) & (ids < flat.shape[-1])  # ids beyond the head: nothing to penalise
        ids, counts = ids[keep], counts[keep]
        sel = flat[:, ids]
        sel = np.where(sel <= 0, sel * np.float32(self.repeat), sel / np.float32(self.repeat))
        sel -= (counts * self.frequency + self.presence).astype(np.float32)
        flat[:, ids] = sel
        return out


def make_logits_processors(params: SamplerParams) -> list[LogitsProcessor]:
    """The processors the parameters ask for, in chain order (bias, then penalties)."""
    params.validate()
    procs: list[LogitsProcessor] = []
    if params.logit_bias:
        procs.append(LogitBias(params.logit_bias))
    if params.repeat_last_n != 0 and (
        params.repeat_penalty != 1.0
        or params.frequency_penalty != 0.0
        or params.presence_penalty != 0.0
    ):
        procs.append(
            Penalties(
                params.repeat_last_n,
                float(params.repeat_penalty),
                float(params.frequency_penalty),
                float(params.presence_penalty),
            )
        )
    return procs


# -- truncation + draw -----------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _shortest_prefix(
    key: np.ndarray, probs: np.ndarray, p: float, strict: bool, min_keep: int
) -> np.ndarray:
    """Indices of the shortest prefix, in (key ascending, id ascending) order, whose probability
    mass reaches p (strict: exceeds p), at least min_keep long. Only a growing top part is
    sorted: all entries with key <= the k-th smallest (ties included, so it is an exact prefix
    of the full order)."""
    m = key.size
    k = min(m, max(256, min_keep))
    while True:
        if k < m:
            kth = np.partition(key, k - 1)[k - 1]
            sel = np.flatnonzero(key <= kth)
        else:
            sel = np.arange(m)
        order = sel[np.argsort(key[sel], kind="stable")]  # ids ascend along the arrays
        cum = np.cumsum(probs[order])
        last = int(np.searchsorted(cum, p, side="right" if strict else "left")) + 1
        if last <= order.size or sel.size == m:
            return order[: min(max(last, min_keep), order.size)]
        k = min(m, k * 8)


class ChainSampler:
    """top-k -> typical-p -> top-p -> min-p -> temperature -> draw (see module doc)."""

    def __init__(self, params: SamplerParams) -> None:
        params.validate()
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, logits) that survive the truncations, highest logit first (ties: lowest id);
        logits are not yet divided by the temperature."""
        ids, vals = self._survivors(logits)
        o = np.lexsort((ids, -vals))
        return ids[o], vals[o]

    def _survivors(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The truncations on (ids, logits) kept in id order: only what a step keeps gets
        sorted, so a 128k vocabulary costs a few passes, not a full sort per token."""
        p = self.params
        x = np.asarray(logits, dtype=np.float32).reshape(-1)
        n = x.size
        if n == 0:
            raise TribitError("cannot sample from empty logits")
        if np.isnan(x).any():
            raise TribitError("the logits contain NaN")
        min_keep = max(1, int(p.min_keep))
        k = int(p.top_k)
        if 0 < k < n:
            k = max(k, min_keep)
            kth = x[np.argpartition(-x, k - 1)[k - 1]]
            above = np.flatnonzero(x > kth)
            ties = np.flatnonzero(x == kth)[: k - above.size]  # ties: the lowest ids
            ids = np.sort(np.concatenate([above, ties]))
        else:
            ids = np.arange(n)
        vals = x[ids]
        top = vals.max()
        if np.isneginf(top):
            raise TribitError("every token has logit -inf (all banned?)")
        if np.isposinf(top):  # a +inf bias forces its token(s): uniform among them
            forced = vals == top
            return ids[forced], np.zeros(int(forced.sum()), np.float32)
        if p.typical_p < 1.0 and ids.size > 1:
            probs = _softmax(vals.astype(np.float64))
            logp = np.log(np.where(probs > 0, probs, 1.0))
            entropy = -np.sum(probs * np.where(probs > 0, logp, 0.0))
            shifted = np.abs(-logp - entropy)
            keep = np.sort(_shortest_prefix(shifted, probs, p.typical_p, True, min_keep))
            ids, vals = ids[keep], vals[keep]
        if p.top_p < 1.0 and ids.size > 1:
            probs = _softmax(vals.astype(np.float64))
            keep = np.sort(_shortest_prefix(-vals, probs, p.top_p, False, min_keep))
            ids, vals = ids[keep], vals[keep]
        if p.min_p > 0.0 and ids.size > 1:
            # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
            keep = vals >= vals.max() + np.float32(math.log(p.min_p))
            if int(keep.sum()) < min(min_keep, ids.size):
                keep = np.sort(np.argsort(-vals, kind="stable")[:min_keep])
            ids, vals = ids[keep], vals[keep]
        return ids, vals

    def probs(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probabilities) of the final distribution (greedy: one id with 1.0)."""
        if self.params.temperature <= 0:
            return np.array([self.greedy(logits)]), np.array([1.0])
        ids, vals = self.candidates(logits)
        return ids, _softmax(vals.astype(np.float64) / float(self.params.temperature))

    def _draw_probs(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # like probs() but unsorted (the draw does not need an order, only a fixed one)
        ids, vals = self._survivors(logits)
        return ids, _softmax(vals.astype(np.float64) / float(self.params.temperature))

    @staticmethod
    def greedy(logits: np.ndarray) -> int:
        """Argmax, ties to the lowest id."""
        x = np.asarray(logits, dtype=np.float32).reshape(-1)
        if x.size == 0:
            raise TribitError("cannot sample from empty logits")
        return int(np.argmax(x))

    def __call__(self, logits: np.ndarray) -> int:
        if self.params.temperature <= 0:
            return self.greedy(logits)
        ids, probs = self._draw_probs(logits)
        if ids.size == 1:
            return int(ids[0])
        cum = np.cumsum(probs)
        i = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        return int(ids[min(i, ids.size - 1)])


def make_sampler(params: SamplerParams) -> ChainSampler:
    """The sampler for `params` (a callable logits -> token id with its own seeded RNG)."""
    return ChainSampler(params)


def sample(
    logits: np.ndarray, params: SamplerParams | None = None, tokens: Sequence[int] = ()
) -> int:
    """One-shot convenience: run the processors and the sampler once."""
    params = params or SamplerParams()
    for proc in make_logits_processors(params):
        logits = proc(tokens, logits)
    return make_sampler(params)(logits)
