"""bitnet.cpp I2_S (fork type 36), the canonical x86 layout (docs/FORMATS.md 3.4).

The row-major flattened tensor is split into blocks of 128 values; byte p of a
block holds values p, 32+p, 64+p, 96+p in bits 7-6, 5-4, 3-2, 1-0 as codes
t + 1. The packed data (m*k/4 bytes) is followed by a 32-byte tail whose first
four bytes are the per-tensor scale (f32, little endian).
"""

from __future__ import annotations

import numpy as np

I2S_BLOCK = 128
I2S_TAIL = 32


def i2s_nbytes(m: int, k: int) -> int:
    return m * k // 4 + I2S_TAIL


def pack_i2s(t: np.ndarray, gamma: float) -> np.ndarray:
    """Pack ternary t (m, k), k % 128 == 0, into I2_S bytes (m*k/4 + 32,)."""
    t = np.asarray(t, np.int8)
    if t.ndim != 2 or t.shape[1] % I2S_BLOCK:
        raise ValueError(f"I2_S needs a 2-D tensor with k % 128 == 0, got shape {t.shape}")
    c = (t.astype(np.uint8) + 1).reshape(-1, 4, 32)
    packed = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    tail = np.zeros(I2S_TAIL, np.uint8)
    tail[:4] = np.array([gamma], "<f4").view(np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


def unpack_i2s(raw: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.float32]:
    """Inverse of pack_i2s: returns (t int8 (m, k), gamma float32)."""
    m, k = shape
    raw = np.asarray(raw, np.uint8)
    n = m * k // 4
    if raw.size != n + I2S_TAIL:
        raise ValueError(f"I2_S data of {raw.size} bytes, expected {n + I2S_TAIL} for {shape}")
    b = raw[:n].reshape(-1, 1, 32)
    shifts = np.array([6, 4, 2, 0], np.uint8).reshape(1, 4, 1)
    t = ((b >> shifts) & 3).reshape(m, k).astype(np.int8) - 1
    t[t == 2] = 0  # unused code 3 decodes to 0
    gamma = raw[n : n + 4].copy().view("<f4")[0]
    return t, np.float32(gamma)
