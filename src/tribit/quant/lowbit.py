"""ggml's group-scaled low-bit types Q2_0 (type 42) and Q1_0 (type 41), and their two
arithmetic modes (docs/FORMATS.md 3.11).

- **Q2_0**: blocks of 64 weights in 18 bytes: f16 `d`, then `qs[16]`; weight j of a block
  has the 2-bit code `(qs[j // 4] >> 2 * (j % 4)) & 3` and the value `(code - 1) * d`
  (codes 0..3 mean -1, 0, +1, +2; the reference quantizer never writes 3, readers accept it).
- **Q1_0**: blocks of 128 weights in 18 bytes: f16 `d`, then `qs[16]`; bit
  `(qs[j // 8] >> (j % 8)) & 1` of weight j means `+d` (1) or `-d` (0).

The reference quantizers are llama.cpp's `quantize_row_q2_0_ref` (d = max|x|, code =
roundf(x / d) + 1 clamped to 0..3) and `quantize_row_q1_0_ref` (d = mean |x| summed in
order, bit = x >= 0), float32 as in the C code.

Two arithmetic modes of `W @ x`:

- **(a) llama.cpp-compatible** (`matmul_q8`): the activations are quantized to Q8_0 blocks
  of 32 at run time as llama.cpp's x86 `quantize_row_q8_0` does (`quantize_act_q8_0`), the
  product of a weight block with its 2 (Q2_0) or 4 (Q1_0) activation blocks is an exact
  integer per activation block, and the float32 accumulation order is that of ggml's x86
  dot products. Q2_0 (`ggml_vec_dot_q2_0_q8_0`, generic C): per weight block
  `t = (da_0 * S_0) + (da_1 * S_1)` left to right, then `acc = acc + dw * t` over the blocks
  in order from `acc = 0`, every product rounded before its sum (no FMA). Q1_0
  (`ggml_vec_dot_q1_0_q8_0`, AVX2): 8 lanes, lane l summing weights 4l..4l+3 of every
  32-block: per weight block `t_l = da_0 * S_0l + da_1 * S_1l + ...` and
  `acc_l = fma(dw, t_l, acc_l)`, then the lanes by halves, `((acc_0 + acc_4) + (acc_2 +
  acc_6)) + ((acc_1 + acc_5) + (acc_3 + acc_7))`. `da * S` is exact (an f16 value times
  |S| < 2^13), so each `t` step is one rounded sum.
- **(b) float-activation reference** (`matmul_f32`): the dequantized weights times the
  float32 activations, summed in float64 and rounded to float32 once: the oracle of what
  the weights mean, with no activation rounding.
"""

from __future__ import annotations

import numpy as np

QK2_0 = 64
QK1_0 = 128
BLOCK_BYTES = 18  # both: f16 d + 16 bytes of codes
QK8_0 = 32

# ggml type id -> values per block (the byte size is BLOCK_BYTES for both)
Q2_0_ID, Q1_0_ID = 42, 41
BLOCK_VALUES = {"q2_0": QK2_0, "q1_0": QK1_0}


def row_bytes(qtype: str, k: int) -> int:
    """Bytes of one row of k values of `qtype` ("q2_0" or "q1_0")."""
    qk = BLOCK_VALUES[qtype]
    if k % qk:
        raise ValueError(f"{qtype.upper()} needs rows that are a multiple of {qk} values, got {k}")
    return k // qk * BLOCK_BYTES


def _blocks(raw: np.ndarray, shape: tuple[int, int], qtype: str) -> np.ndarray:
    m, k = shape
    raw = np.asarray(raw, np.uint8).reshape(-1)
    if raw.size != m * row_bytes(qtype, k):
        raise ValueError(
            f"{qtype.upper()} data has {raw.size} bytes, shape {shape} needs "
            f"{m * row_bytes(qtype, k)}"
        )
    return raw.reshape(m, k // BLOCK_VALUES[qtype], BLOCK_BYTES)


def block_scales(raw: np.ndarray, shape: tuple[int, int], qtype: str) -> np.ndarray:
    """The f16 block scales d as float32 (m, k / block)."""
    b = _blocks(raw, shape, qtype)
    return b[:, :, :2].copy().view("<f2")[:, :, 0].astype(np.float32)


def q2_0_codes(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The 2-bit codes (m, k) uint8 in 0..3 of Q2_0 bytes."""
    m, k = shape
    qs = _blocks(raw, shape, "q2_0")[:, :, 2:]  # (m, nb, 16)
    shifts = np.array([0, 2, 4, 6], np.uint8)
    return ((qs[:, :, :, None] >> shifts) & 3).reshape(m, k)


def q1_0_bits(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The sign bits (m, k) uint8 in 0..1 of Q1_0 bytes."""
    m, k = shape
    qs = _blocks(raw, shape, "q1_0")[:, :, 2:]
    return np.unpackbits(qs, axis=2, bitorder="little").reshape(m, k)


def weight_values(raw: np.ndarray, shape: tuple[int, int], qtype: str) -> np.ndarray:
    """The integer weight values (m, k) int8: code - 1 (Q2_0) or 2 * bit - 1 (Q1_0)."""
    if qtype == "q2_0":
        return q2_0_codes(raw, shape).astype(np.int8) - 1
    return q1_0_bits(raw, shape).astype(np.int8) * 2 - 1


def dequantize(raw: np.ndarray, shape: tuple[int, int], qtype: str) -> np.ndarray:
    """Q2_0 / Q1_0 bytes -> float32 (m, k): value * d (exact in float32)."""
    m, k = shape
    d = block_scales(raw, shape, qtype)
    v = weight_values(raw, shape, qtype).astype(np.float32)
    qk = BLOCK_VALUES[qtype]
    return (v.reshape(m, k // qk, qk) * d[:, :, None]).reshape(m, k)


def _f16_bytes(d: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return d.astype("<f2").view(np.uint8).reshape(*d.shape, 2)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf: half away from zero, exactly (no float addition)."""
    a = np.abs(v)
    fl = np.floor(a)
    r = fl + ((a - fl) >= np.float32(0.5))
    return np.copysign(r, v)


def quantize_row_q2_0_ref(x: np.ndarray) -> np.ndarray:
    """float32 (m, k), k % 64 == 0 -> Q2_0 bytes (m, k/64*18), as llama.cpp's reference."""
    x = np.asarray(x, np.float32)
    m, k = x.shape
    nb = k // QK2_0
    row_bytes("q2_0", k)
    xb = x.reshape(m, nb, QK2_0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # the C loop's `if (a > amax)`: NaN never wins
        amax = np.fmax.reduce(np.abs(xb), axis=2, initial=np.float32(0)).astype(np.float32)
        inv = np.where(amax > 0, np.float32(1) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        r = _roundf((xb * inv[:, :, None]).astype(np.float32))
        # (int)NaN is INT_MIN on x86 (cvttss2si): code 0 after the clamp
        r = np.where(np.isnan(r), -1e9, r)
        code = (np.clip(r, -1, 2) + 1).astype(np.uint8)
    qs = code.reshape(m, nb, 16, 4)
    packed = qs[..., 0] | qs[..., 1] << 2 | qs[..., 2] << 4 | qs[..., 3] << 6
    out = np.empty((m, nb, BLOCK_BYTES), np.uint8)
    out[:, :, :2] = _f16_bytes(amax)
    out[:, :, 2:] = packed
    return out.reshape(m, nb * BLOCK_BYTES)


def quantize_row_q1_0_ref(x: np.ndarray) -> np.ndarray:
    """float32 (m, k), k % 128 == 0 -> Q1_0 bytes (m, k/128*18), as llama.cpp's reference."""
    x = np.asarray(x, np.float32)
    m, k = x.shape
    nb = k // QK1_0
    row_bytes("q1_0", k)
    xb = x.reshape(m, nb, QK1_0)
    a = np.abs(xb)
    s = np.zeros((m, nb), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(QK1_0):  # float32 sum in index order, as the C loop
            s = (s + a[:, :, j]).astype(np.float32)
        d = (s / np.float32(QK1_0)).astype(np.float32)
    bits = (xb >= 0).astype(np.uint8)
    out = np.empty((m, nb, BLOCK_BYTES), np.uint8)
    out[:, :, :2] = _f16_bytes(d)
    out[:, :, 2:] = np.packbits(bits, axis=2, bitorder="little")
    return out.reshape(m, nb * BLOCK_BYTES)


def quantize_act_q8_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activations (n, k), k % 32 == 0, to Q8_0 blocks as llama.cpp's x86 `quantize_row_q8_0`.

    Per 32 values: amax = max|x|, d = f16(amax / 127), id = 127 / amax (0 when amax is 0),
    q = round_half_even(x * id) saturated to int8. Returns q int8 (n, k) and d float32
    (n, k / 32), the f16-rounded scale as a float (what the dot product multiplies by).
    Note: ggml's `quantize_row_q8_0_ref` (file quantization) uses 1 / d and roundf instead;
    the x86 run-time path above is the one llama.cpp applies to activations.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] % QK8_0:
        raise ValueError(f"Q8_0 activations need shape (n, k) with k % 32 == 0, got {x.shape}")
    n, k = x.shape
    xb = x.reshape(n, k // QK8_0, QK8_0)
    amax = np.abs(xb).max(axis=2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (amax / np.float32(127)).astype(np.float32)
        d16 = d.astype(np.float16).astype(np.float32)
        inv = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), 0)
        v = np.rint((xb * inv.astype(np.float32)[:, :, None]).astype(np.float32))
    q = np.clip(v, -128, 127).astype(np.int8).reshape(n, k)
    return q, d16


def block_sums(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact integer sums S (n, m, k / 32) of w (m, k) int8 times q (n, k) per 32-block."""
    m, k = w.shape
    n = q.shape[0]
    nb = k // QK8_0
    wb = w.reshape(m, nb, QK8_0).astype(np.int32)
    qb = q.reshape(n, nb, QK8_0).astype(np.int32)
    return np.einsum("mbi,nbi->nmb", wb, qb)


def matmul_q8(
    raw: np.ndarray, shape: tuple[int, int], qtype: str, q: np.ndarray, da: np.ndarray
) -> np.ndarray:
    """Mode (a): y (n, m) float32 = W @ x with x as Q8_0 blocks (q, da from
    `quantize_act_q8_0`), in ggml's accumulation order (module docstring)."""
    m, k = shape
    per = BLOCK_VALUES[qtype] // QK8_0  # activation blocks per weight block: 2 or 4
    dw = block_scales(raw, shape, qtype)  # (m, nbw)
    da = np.asarray(da, np.float32)
    n = q.shape[0]
    if qtype == "q1_0":
        return _matmul_q1_0_lanes(weight_values(raw, shape, qtype), q, da, dw)
    s = block_sums(weight_values(raw, shape, qtype), q).astype(np.float32)  # exact
    acc = np.zeros((n, m), np.float32)
    for b in range(k // BLOCK_VALUES[qtype]):
        t = np.zeros((n, m), np.float32)  # ggml's `sumi = 0.0f`: a zero sum is +0
        for h in range(per):
            t = t + (da[:, None, b * per + h] * s[:, :, b * per + h]).astype(np.float32)
            t = t.astype(np.float32)
        acc = (acc + (dw[None, :, b] * t).astype(np.float32)).astype(np.float32)
    return acc


def _matmul_q1_0_lanes(w: np.ndarray, q: np.ndarray, da: np.ndarray, dw: np.ndarray) -> np.ndarray:
    """Q1_0 in ggml's AVX2 order (module docstring): (n, m) float32."""
    m, k = w.shape
    n = q.shape[0]
    nb = k // QK8_0
    # S[j, r, a, l]: exact sums of the 4 products of lane l in activation block a
    s = np.einsum(
        "mali,nali->nmal",
        w.reshape(m, nb, 8, 4).astype(np.int32),
        q.reshape(n, nb, 8, 4).astype(np.int32),
    ).astype(np.float32)
    acc = np.zeros((n, m, 8), np.float32)
    for b in range(k // QK1_0):
        t = np.zeros((n, m, 8), np.float32)
        for h in range(4):
            a = b * 4 + h
            prod = (da[:, None, a, None] * s[:, :, a, :]).astype(np.float32)  # exact
            t = prod if h == 0 else (t + prod).astype(np.float32)
        acc = fma32(np.broadcast_to(dw[None, :, b, None], t.shape), t, acc)
    r = (acc[..., 4:] + acc[..., :4]).astype(np.float32)
    return ((r[..., 0] + r[..., 2]).astype(np.float32) + (r[..., 1] + r[..., 3])).astype(np.float32)


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fma(a, b, c), rounded once (half to even), for float32 arrays whose products
    a * b are exact in float64 (as every product of two float32 values is)."""
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c64 = np.asarray(c, np.float64)
    s = p + c64
    bp = s - c64
    e = (p - bp) + (c64 - (s - bp))  # s + e == p + c exactly (TwoSum)
    r = s.astype(np.float32)
    # rounding s once more is right unless s lies exactly halfway between two floats and
    # the exact value does not: then it rounds toward e
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)))
    mid = (r64 + other.astype(np.float64)) / 2
    fix = (s != r64) & (s == mid) & (e != 0) & ((e > 0) == (other > r))
    return np.where(fix, other, r).astype(np.float32)


def matmul_f32(raw: np.ndarray, shape: tuple[int, int], qtype: str, x: np.ndarray) -> np.ndarray:
    """Mode (b): y (n, m) float32 = dequantized W @ x (float32 x), summed in float64 and
    rounded once."""
    w = dequantize(raw, shape, qtype).astype(np.float64)
    return (np.asarray(x, np.float32).astype(np.float64) @ w.T).astype(np.float32)
