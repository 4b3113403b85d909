"""ggml k-quants: Q6_K (type 14), the 6-bit head/embedding type of llama.cpp and bitnet.cpp.

A Q6_K super-block holds 256 values in 210 bytes: ql[128] (low 4 bits), qh[64] (high 2
bits), int8 scales[16] (one per 16 values) and an f16 d. Value i of a super-block is
`(d * scales[i // 16]) * (q6[i] - 32)`, with the float32 products in that order (as
ggml's `dequantize_row_q6_K` and gguf-py compute it). Within each half (128 values) the
codes are laid out as ggml does: for l in 0..31, value l / l+32 / l+64 / l+96 have their low
nibbles in ql[l] low, ql[l+32] low, ql[l] high, ql[l+32] high, and their high bits in
qh[l] bits 0-1, 2-3, 4-5, 6-7.

`quantize_q6_k` is llama.cpp's `quantize_row_q6_K_ref` (no importance weights): per 16
values `make_qx_quants(16, 32, x, L, rmse_type=1)` (a search over 19 candidate scales,
weighted by x^2), then the 16 sub-scales quantized to int8 against the largest, then the
codes recomputed against the rounded scales. Every operation is float32 in the order of
the C code, and no product is fused (x86-64 ggml-base is built without FMA contraction),
so the bytes match llama.cpp's. Rows are processed in chunks to bound memory.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
Q6_K_BLOCK_BYTES = 210
GROUP_MAX_EPS = np.float32(1e-15)
_CHUNK_BLOCKS = 1 << 14  # super-blocks per numpy pass (~16 MiB of float32 input)


def q6_k_row_bytes(k: int) -> int:
    """Bytes of one Q6_K row of k values (k % 256 == 0)."""
    if k % QK_K:
        raise ValueError(f"Q6_K needs k % 256 == 0, got k={k}")
    return k // QK_K * Q6_K_BLOCK_BYTES


def _nearest_int(v: np.ndarray) -> np.ndarray:
    # ggml's nearest_int adds 1.5 * 2^23 in float32: round half to even (|v| < 2^22)
    return np.rint(v).astype(np.int32)


def _make_qx_quants_q6(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants(n=16, nmax=32, rmse_type=1, qw=NULL) on every row of x (B, 16) float32.

    Returns (scale (B,) float32, L (B, 16) int32 codes in 0..63). Works on the transpose
    (16, B), so that the 16 sequential steps of each float32 sum read contiguous rows."""
    f32 = np.float32
    nb = x.shape[0]
    xt = np.ascontiguousarray(x.T)  # (16, B)
    ax = np.abs(xt)
    imax = np.argmax(ax, axis=0)  # first of equal maxima, like the C loop's strict '>'
    amax = ax[imax, np.arange(nb)]
    vmax = xt[imax, np.arange(nb)]
    zero = amax < GROUP_MAX_EPS
    safe_max = np.where(zero, f32(1), vmax).astype(f32)
    wx = (xt * xt) * xt  # rmse_type 1: weights x^2; the C code's w * x[i], before * l

    def sums(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lf = np.clip(np.rint(iscale * xt), -32, 31).astype(f32)  # exact small integers
        w = xt * xt
        wl = (w * lf) * lf
        pl = wx * lf
        sumlx = np.zeros(nb, f32)
        suml2 = np.zeros(nb, f32)
        for i in range(16):  # sequential float32 sums, as in C
            sumlx += pl[i]
            suml2 += wl[i]
        return lf, sumlx, suml2

    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = (f32(-32) / safe_max).astype(f32)
        lf, sumlx, suml2 = sums(iscale)
        best_l = lf
        scale = np.where(suml2 != 0, sumlx / suml2, f32(0)).astype(f32)
        best = (scale * sumlx).astype(f32)
        for step in range(-9, 10):
            if step == 0:
                continue
            cand = f32(f32(32) + f32(0.1) * f32(step))
            iscale = (-cand / safe_max).astype(f32)
            lf, sumlx, suml2 = sums(iscale)
            better = (suml2 > 0) & ((sumlx * sumlx) > (best * suml2))
            if better.any():
                best_l = np.where(better, lf, best_l)
                new_scale = np.where(better, sumlx / np.where(better, suml2, f32(1)), scale)
                scale = new_scale.astype(f32)
                best = np.where(better, scale * sumlx, best).astype(f32)
    scale = np.where(zero, f32(0), scale).astype(f32)
    big_l = np.where(zero, 0, best_l.astype(np.int32) + 32)
    return scale, np.ascontiguousarray(big_l.T)


def _quantize_blocks(x: np.ndarray) -> np.ndarray:
    """x (nb, 256) float32 -> (nb, 210) uint8 Q6_K super-blocks."""
    f32 = np.float32
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    scales, big_l = _make_qx_quants_q6(sub)
    scales = scales.reshape(nb, 16)
    big_l = big_l.reshape(nb, 16, 16)
    aabs = np.abs(scales)
    imax = np.argmax(aabs, axis=1)
    max_abs = aabs[np.arange(nb), imax]
    max_scale = scales[np.arange(nb), imax]
    zero = max_abs < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = (f32(-128) / np.where(zero, f32(1), max_scale)).astype(f32)
        d16 = (f32(1) / iscale).astype(np.float16)
        sc = np.minimum(127, _nearest_int(iscale[:, None] * scales)).astype(np.int8)
        d = d16.astype(f32)[:, None] * sc.astype(f32)  # (nb, 16)
        xs = x.reshape(nb, 16, 16)
        l = np.clip(_nearest_int(xs / np.where(d == 0, f32(1), d)[:, :, None]), -32, 31) + 32
    big_l = np.where((d != 0)[:, :, None], l, big_l).reshape(nb, 2, 4, 32).astype(np.uint8)
    # L[j + l + 32*p] for half j, p = 0..3 (values l, l+32, l+64, l+96)
    lo = big_l & 0xF
    hi = big_l >> 4
    ql = np.concatenate(
        [lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2
    )  # (nb, 2, 64)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)  # (nb, 2, 32)
    out = np.empty((nb, Q6_K_BLOCK_BYTES), np.uint8)
    out[:, :128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:] = d16.astype("<f2").view(np.uint8).reshape(nb, 2)
    out[zero] = 0  # an all-zero super-block: every byte 0 (d = +0)
    return out


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """float32 (m, k), k % 256 == 0 -> Q6_K bytes (m, k/256*210), like llama.cpp's reference."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"quantize_q6_k needs a 2-D array, got shape {x.shape}")
    m, k = x.shape
    rb = q6_k_row_bytes(k)
    flat = x.reshape(-1, QK_K)
    out = np.empty((flat.shape[0], Q6_K_BLOCK_BYTES), np.uint8)
    for b in range(0, flat.shape[0], _CHUNK_BLOCKS):
        out[b : b + _CHUNK_BLOCKS] = _quantize_blocks(
            np.ascontiguousarray(flat[b : b + _CHUNK_BLOCKS])
        )
    return out.reshape(m, rb)


def dequantize_q6_k(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Q6_K bytes -> float32 (m, k): (d * scale) * (q - 32), in float32."""
    m, k = shape
    nb = m * k // QK_K
    raw = np.asarray(raw, np.uint8)
    if m * q6_k_row_bytes(k) != raw.size:
        raise ValueError(
            f"Q6_K data has {raw.size} bytes, shape {shape} needs {m * q6_k_row_bytes(k)}"
        )
    b = raw.reshape(nb, Q6_K_BLOCK_BYTES)
    ql = b[:, :128].reshape(nb, 2, 64)
    qh = b[:, 128:192].reshape(nb, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = b[:, 208:].copy().view("<f2").astype(np.float32)  # (nb, 1)
    q = np.empty((nb, 2, 4, 32), np.int16)
    q[:, :, 0] = (ql[:, :, :32] & 0xF) | ((qh & 3) << 4)
    q[:, :, 1] = (ql[:, :, 32:] & 0xF) | (((qh >> 2) & 3) << 4)
    q[:, :, 2] = (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4)
    q[:, :, 3] = (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)
    ds = (d * sc).reshape(nb, 16, 1)
    vals = (q.reshape(nb, 16, 16) - 32).astype(np.float32)
    return (ds * vals).reshape(m, k)


Q8_K_BLOCK_BYTES = 292  # float32 d, int8 qs[256], int16 bsums[16]


def quantize_q8_k(x: np.ndarray) -> np.ndarray:
    """float32 (n, k), k % 256 == 0 -> q8_K bytes (n, k/256*292): llama.cpp's
    `quantize_row_q8_K_ref`, the activations of the q6_k head's integer path.

    Per 256 values: max = the first value of largest |x| (the C loop's strict '>'),
    iscale = -127 / max (float32; the sign makes that value's code -127), codes
    min(127, round-half-even(iscale * x)), bsums = the sums of each 16 codes, d = 1 / iscale;
    an all-zero block has d = 0 and zero codes. So x ~ d * qs."""
    f32 = np.float32
    x = np.asarray(x, f32)
    if x.ndim != 2 or x.shape[1] % QK_K:
        raise ValueError(f"quantize_q8_k needs (n, k) with k % 256 == 0, got shape {x.shape}")
    n, k = x.shape
    blocks = x.reshape(-1, QK_K)
    nb = blocks.shape[0]
    imax = np.argmax(np.abs(blocks), axis=1)
    vmax = blocks[np.arange(nb), imax]
    zero = vmax == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = (f32(-127) / np.where(zero, f32(1), vmax)).astype(f32)
        qs = np.minimum(127, _nearest_int((iscale[:, None] * blocks).astype(f32)))
        d = (f32(1) / iscale).astype(f32)
    qs = np.where(zero[:, None], 0, qs).astype(np.int8)
    d = np.where(zero, f32(0), d).astype("<f4")
    bsums = qs.reshape(nb, 16, 16).astype(np.int16).sum(axis=2, dtype=np.int16).astype("<i2")
    out = np.empty((nb, Q8_K_BLOCK_BYTES), np.uint8)
    out[:, :4] = d.view(np.uint8).reshape(nb, 4)
    out[:, 4:260] = qs.view(np.uint8)
    out[:, 260:] = bsums.view(np.uint8).reshape(nb, 32)
    return out.reshape(n, k // QK_K * Q8_K_BLOCK_BYTES)


def q6_k_q8_k_matmul_ref(w_raw: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """The q6_k head's integer path (docs/KERNELS.md "The Q6_K head's integer path"): Q6_K
    bytes (m, k/256*210) times q8_K bytes (n, k/256*292) -> float32 (n, m). Per super-block
    the exact integer S_b = sum_i (q6_i - 32) * qs_i * scale_{i // 16}, then
    acc = acc + (d_w * d_x) * float(S_b) in float32, in block order from acc = 0
    (bit-identical to the native kernels)."""
    f32 = np.float32
    m = w_raw.shape[0]
    n = xq.shape[0]
    nb = k // QK_K
    b = np.asarray(w_raw, np.uint8).reshape(m, nb, Q6_K_BLOCK_BYTES)
    ql = b[:, :, :128].reshape(m, nb, 2, 64)
    qh = b[:, :, 128:192].reshape(m, nb, 2, 32)
    q = np.empty((m, nb, 2, 4, 32), np.int64)
    q[..., 0, :] = (ql[..., :32] & 0xF) | ((qh & 3) << 4)
    q[..., 1, :] = (ql[..., 32:] & 0xF) | (((qh >> 2) & 3) << 4)
    q[..., 2, :] = (ql[..., :32] >> 4) | (((qh >> 4) & 3) << 4)
    q[..., 3, :] = (ql[..., 32:] >> 4) | (((qh >> 6) & 3) << 4)
    sc = b[:, :, 192:208].view(np.int8).astype(np.int64)  # (m, nb, 16)
    wq = (q.reshape(m, nb, 16, 16) - 32) * sc[..., None]  # (m, nb, 16, 16)
    dw = b[:, :, 208:].copy().view("<f2").astype(f32)[..., 0]  # (m, nb)
    x = np.asarray(xq, np.uint8).reshape(n, nb, Q8_K_BLOCK_BYTES)
    dx = x[:, :, :4].copy().view("<f4")[..., 0]  # (n, nb)
    qs = x[:, :, 4:260].view(np.int8).astype(np.int64)  # (n, nb, 256)
    s = np.einsum("mbi,nbi->nmb", wq.reshape(m, nb, 256), qs)  # exact (int64)
    acc = np.zeros((n, m), f32)
    for bi in range(nb):
        dd = (dw[None, :, bi] * dx[:, None, bi]).astype(f32)
        acc = (acc + dd * s[:, :, bi].astype(f32)).astype(f32)
    return acc


def dequantize_q8_k(raw: np.ndarray) -> np.ndarray:
    """q8_K bytes (n, k/256*292) -> float32 (n, k): d * qs per block."""
    raw = np.asarray(raw, np.uint8)
    n = raw.shape[0]
    b = raw.reshape(-1, Q8_K_BLOCK_BYTES)
    d = b[:, :4].copy().view("<f4")  # (nb, 1)
    qs = b[:, 4:260].view(np.int8).astype(np.float32)
    return (d * qs).reshape(n, -1)
