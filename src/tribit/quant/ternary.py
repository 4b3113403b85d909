"""Ternary weight quantization (docs/FORMATS.md 1.1): absmean, one scale per tensor."""

from __future__ import annotations

import numpy as np

from .torch_sum import torch_mean_f32


def absmean_ternarize(
    w: np.ndarray, torch_threads: int | None = None
) -> tuple[np.ndarray, np.float32]:
    """Quantize a float weight tensor to ternary the way BitNet b1.58 trains it.

    Mirrors the training code: ``s = 1 / clamp(mean|w|, 1e-5)`` in float32, then
    ``clamp(round(w * s), -1, 1)`` with round half to even. Returns ``(t, gamma)``
    with ``t`` int8 in {-1, 0, 1} of the same shape and ``gamma = 1 / s``'s source,
    the clamped mean (effective weight = gamma * t).
    """
    w = np.asarray(w, dtype=np.float32)
    if torch_threads is None:
        # correctly rounded mean: machine independent, within 1 ulp of torch's
        mean = np.float32(np.mean(np.abs(w), dtype=np.float64))
    else:
        # torch's own summation order, as a converter run with that many threads
        mean = torch_mean_f32(np.abs(w), n_threads=torch_threads)
    gamma = np.float32(max(mean, np.float32(1e-5)))
    s = np.float32(1.0) / gamma
    t = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
    return t, gamma


def as_ternary(w: np.ndarray) -> tuple[np.ndarray, np.float32] | None:
    """Return ``(t, g)`` if ``w`` holds exactly the values {-g, 0, +g} for one g > 0.

    This is how mainline llama.cpp stores folded ternary weights in F16/F32 files.
    A tensor of all zeros is ternary with g = 1. Anything else returns None.
    """
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        return None
    a = np.abs(w)
    g = a.max() if a.size else 0
    if not np.isfinite(g):
        return None
    if g == 0:
        return np.zeros(w.shape, np.int8), np.float32(1.0)
    nz = a != 0
    if not np.all(a[nz] == g):
        return None
    t = np.sign(w).astype(np.int8)
    return t, np.float32(g)
