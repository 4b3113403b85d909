"""Hugging Face packed ternary weights (2B-4T, Llama3-8B-1.58, Falcon3-1.58bit).

docs/FORMATS.md 2.1: codes t + 1 packed along the output (row) dimension: with
R = ceil(m / 4), packed[r, k] holds rows r, R+r, 2R+r, 3R+r in bits 0-1, 2-3,
4-5, 6-7.
"""

from __future__ import annotations

import numpy as np


def pack_hf(t: np.ndarray) -> np.ndarray:
    """Pack ternary t (m, k) into uint8 (ceil(m/4), k)."""
    t = np.asarray(t, np.int8)
    m, k = t.shape
    r = -(-m // 4)
    c = np.ones((4 * r, k), np.uint8)  # padding rows hold code 1 (zero)
    c[:m] = (t + 1).astype(np.uint8)
    c = c.reshape(4, r, k)
    return c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6


def unpack_hf(packed: np.ndarray, m: int) -> np.ndarray:
    """Unpack uint8 (ceil(m/4), k) into ternary int8 (m, k).

    Raises ValueError on the unused code 3, which transformers would decode as +2.
    """
    packed = np.asarray(packed, np.uint8)
    if packed.ndim != 2 or packed.shape[0] * 4 < m:
        raise ValueError(f"packed weight of shape {packed.shape} cannot hold {m} rows")
    planes = np.concatenate([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=0)[:m]
    if np.any(planes == 3):
        raise ValueError("packed ternary weight holds the invalid code 3")
    return planes.astype(np.int8) - 1
