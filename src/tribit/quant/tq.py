"""Mainline llama.cpp TQ2_0 (type 35) and TQ1_0 (type 34) block layouts.

docs/FORMATS.md 3.7. Blocks of 256 weights along a row; each block stores trits
t + 1 in {0, 1, 2} and an f16 scale d (the block's max |value|; 0 for an
all-zero block). Byte-identical to gguf-py's quantizers for ternary input.
"""

from __future__ import annotations

import numpy as np

QK = 256
TQ2_0_BLOCK_BYTES = 66  # qs[64], d f16
TQ1_0_BLOCK_BYTES = 54  # qs[48], qh[4], d f16
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)


def _check(t: np.ndarray) -> tuple[int, int]:
    if t.ndim != 2:
        raise ValueError(f"ternary tensor must be 2-D (m, k), got shape {t.shape}")
    m, k = t.shape
    if k % QK:
        raise ValueError(f"TQ types need k to be a multiple of {QK}, got shape {t.shape}")
    return m, k


def _block_d(t: np.ndarray, gamma: float) -> np.ndarray:
    """(m, nb) f16 block scales: gamma where the block has a non-zero, else 0."""
    m, k = t.shape
    nz = np.any(t.reshape(m, k // QK, QK) != 0, axis=2)
    return np.where(nz, np.float16(gamma), np.float16(0)).astype("<f2")


def pack_tq2_0(t: np.ndarray, gamma: float) -> np.ndarray:
    """Pack ternary t (m, k) with scale gamma into TQ2_0 bytes (m, k/256*66)."""
    t = np.asarray(t, np.int8)
    m, k = _check(t)
    nb = k // QK
    c = (t.astype(np.uint8) + 1).reshape(m, nb, 2, 4, 32)  # chunk, group, lane
    qs = c[:, :, :, 0] | c[:, :, :, 1] << 2 | c[:, :, :, 2] << 4 | c[:, :, :, 3] << 6
    out = np.empty((m, nb, TQ2_0_BLOCK_BYTES), np.uint8)
    out[:, :, :64] = qs.reshape(m, nb, 64)
    out[:, :, 64:] = _block_d(t, gamma).view(np.uint8).reshape(m, nb, 2)
    return out.reshape(m, nb * TQ2_0_BLOCK_BYTES)


def unpack_tq2_0(raw: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of pack_tq2_0: returns (t int8 (m, k), d float32 (m, k/256))."""
    m, k = shape
    nb = k // QK
    b = np.asarray(raw, np.uint8).reshape(m, nb, TQ2_0_BLOCK_BYTES)
    qs = b[:, :, :64].reshape(m, nb, 2, 1, 32)
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 1, 4, 1)
    codes = (qs >> shifts) & 3
    t = codes.reshape(m, k).astype(np.int8) - 1
    # code 3 is never written; decoders treat it as 0 (docs/FORMATS.md 2.1)
    t[t == 2] = 0
    d = b[:, :, 64:].copy().view("<f2").reshape(m, nb).astype(np.float32)
    return t, d


def _pack_base3(trits: np.ndarray) -> np.ndarray:
    """trits (..., 5) in {0,1,2}, first most significant -> ceil(n * 256 / 243) bytes."""
    n = (trits.astype(np.uint16) * _POW3).sum(axis=-1)
    return ((n * 256 + 242) // 243).astype(np.uint8)


def _unpack_base3(b: np.ndarray, n_trits: int) -> np.ndarray:
    """bytes (...) -> trits (..., n_trits), first most significant."""
    out = []
    for i in range(n_trits):
        q = (b.astype(np.uint16) * (3**i)) & 0xFF  # modulo 256
        out.append(((q * 3) >> 8).astype(np.uint8))
    return np.stack(out, axis=-1)


def pack_tq1_0(t: np.ndarray, gamma: float) -> np.ndarray:
    """Pack ternary t (m, k) with scale gamma into TQ1_0 bytes (m, k/256*54)."""
    t = np.asarray(t, np.int8)
    m, k = _check(t)
    nb = k // QK
    c = (t.astype(np.uint8) + 1).reshape(m, nb, QK)
    out = np.empty((m, nb, TQ1_0_BLOCK_BYTES), np.uint8)
    # qs[0..31]: trits c[m + 32 j], j = 0..4
    out[:, :, 0:32] = _pack_base3(c[:, :, :160].reshape(m, nb, 5, 32).transpose(0, 1, 3, 2))
    # qs[32..47]: trits c[160 + m + 16 j], j = 0..4
    out[:, :, 32:48] = _pack_base3(c[:, :, 160:240].reshape(m, nb, 5, 16).transpose(0, 1, 3, 2))
    # qh[0..3]: trits c[240 + j + 4 i], i = 0..3, then a fifth zero trit
    h = c[:, :, 240:256].reshape(m, nb, 4, 4).transpose(0, 1, 3, 2)
    h = np.concatenate([h, np.zeros((m, nb, 4, 1), np.uint8)], axis=-1)
    out[:, :, 48:52] = _pack_base3(h)
    out[:, :, 52:54] = _block_d(t, gamma).view(np.uint8).reshape(m, nb, 2)
    return out.reshape(m, nb * TQ1_0_BLOCK_BYTES)


def unpack_tq1_0(raw: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of pack_tq1_0: returns (t int8 (m, k), d float32 (m, k/256))."""
    m, k = shape
    nb = k // QK
    b = np.asarray(raw, np.uint8).reshape(m, nb, TQ1_0_BLOCK_BYTES)
    c = np.empty((m, nb, QK), np.uint8)
    c[:, :, :160] = _unpack_base3(b[:, :, 0:32], 5).transpose(0, 1, 3, 2).reshape(m, nb, 160)
    c[:, :, 160:240] = _unpack_base3(b[:, :, 32:48], 5).transpose(0, 1, 3, 2).reshape(m, nb, 80)
    h = _unpack_base3(b[:, :, 48:52], 4)  # (m, nb, 4 bytes, 4 trits)
    c[:, :, 240:256] = h.transpose(0, 1, 3, 2).reshape(m, nb, 16)
    t = c.reshape(m, k).astype(np.int8) - 1
    t[t == 2] = 0
    d = b[:, :, 52:54].copy().view("<f2").reshape(m, nb).astype(np.float32)
    return t, d
