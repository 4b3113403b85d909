"""Float helpers: bfloat16 <-> float32 and ggml Q8_0 (32-value blocks, f16 d)."""

from __future__ import annotations

import numpy as np

QK8_0 = 32
Q8_0_BLOCK_BYTES = 34


def bf16_to_f32(b: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16 array) -> float32 (exact)."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even; NaN stays NaN."""
    u = np.asarray(x, np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """float32 (m, k), k % 32 == 0 -> Q8_0 bytes (m, k/32*34), like ggml's reference."""
    x = np.asarray(x, np.float32)
    m, k = x.shape
    if k % QK8_0:
        raise ValueError(f"Q8_0 needs k % 32 == 0, got shape {x.shape}")
    blocks = x.reshape(m, k // QK8_0, QK8_0)
    d = (np.abs(blocks).max(axis=2, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    # ggml's roundf: round half away from zero (np.rint would round half to even)
    v = blocks * inv
    a = np.abs(v)
    q = (np.sign(v) * (np.floor(a) + np.floor(2 * (a - np.floor(a))))).astype(np.int8)
    out = np.empty((m, k // QK8_0, Q8_0_BLOCK_BYTES), np.uint8)
    out[:, :, :2] = d.astype("<f2").view(np.uint8).reshape(m, k // QK8_0, 2)
    out[:, :, 2:] = q.view(np.uint8)
    return out.reshape(m, -1)


def dequantize_q8_0(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Q8_0 bytes -> float32 (m, k)."""
    m, k = shape
    b = np.asarray(raw, np.uint8).reshape(m, k // QK8_0, Q8_0_BLOCK_BYTES)
    d = b[:, :, :2].copy().view("<f2").astype(np.float32)
    q = b[:, :, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(m, k)
