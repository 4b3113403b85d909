"""Per-token int8 activation quantization and the exact BitLinear epilogue.

docs/FORMATS.md 1.2 and 1.5. This is the contract every native kernel matches bit
for bit: the integer sum is exact and the float epilogue is fixed here.
"""

from __future__ import annotations

import numpy as np

ACT_MAX = np.float32(127.0)
AMAX_FLOOR = np.float32(1e-5)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize activations per token (row) with absmax to int8.

    x: (n, k) float32, finite. Returns ``q`` int8 (n, k), ``scale`` float32 (n,)
    = 127 / max(amax, 1e-5) (the multiplier), and ``sum_q`` int32 (n,) = sum of q.
    ``q = clamp(round_half_even(x * scale), -128, 127)``, the multiply in float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"activations must be 2-D (n, k), got shape {x.shape}")
    amax = np.maximum(np.abs(x).max(axis=1, initial=np.float32(0)), AMAX_FLOOR)
    scale = (ACT_MAX / amax).astype(np.float32)
    q = np.clip(np.rint(x * scale[:, None]), -128, 127).astype(np.int8)
    sum_q = q.sum(axis=1, dtype=np.int32)
    return q, scale, sum_q


def ternary_matmul_ref(t: np.ndarray, gamma: float, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The lossless BitLinear: ``y[j, r] = float(S[j, r]) * (gamma / scale[j])``.

    t: (m, k) int8 ternary, q: (n, k) int8, scale: (n,) float32. ``S`` is the exact
    integer sum; ``post = gamma / scale[j]`` is computed once per token in float32.
    Returns y float32 (n, m).
    """
    s = q.astype(np.int32) @ t.astype(np.int32).T  # exact: |S| <= 127 * k
    post = (np.float32(gamma) / np.asarray(scale, np.float32)).astype(np.float32)
    return (s.astype(np.float32) * post[:, None]).astype(np.float32)
