"""Q6_K (ggml type 14): the numpy spec against gguf-py and a scalar transliteration of
llama.cpp's quantize_row_q6_K_ref, and the native quantizer against the spec.

gguf-py (0.19) dequantizes Q6_K but has no Q6_K quantizer, so the quantizer's reference
is `_q6_k_ref_scalar` below: llama.cpp's algorithm statement by statement on float32
scalars (make_qx_quants with nmax 32, rmse_type 1, no importance weights), independent
of the vectorised spec it checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from tribit.quant import dequantize_q6_k, quantize_q6_k

gguf = pytest.importorskip("gguf")
F = np.float32


def _nearest_int(v) -> int:
    return int(np.rint(F(v)))


def _make_qx_quants(x) -> tuple[np.float32, list[int]]:
    nmax = 32
    amax, vmax = F(0), F(0)
    for v in x:
        if abs(v) > amax:
            amax, vmax = F(abs(v)), v
    if amax < F(1e-15):
        return F(0), [0] * 16

    def quants(iscale):
        ls = [max(-nmax, min(nmax - 1, _nearest_int(iscale * v))) for v in x]
        slx, sl2 = F(0), F(0)
        for v, li in zip(x, ls, strict=True):
            w = F(v * v)
            slx = F(slx + F(F(w * v) * F(li)))
            sl2 = F(sl2 + F(F(w * F(li)) * F(li)))
        return ls, slx, sl2

    ls, sumlx, suml2 = quants(F(F(-nmax) / vmax))
    best_l = [li + nmax for li in ls]
    scale = F(sumlx / suml2) if suml2 != 0 else F(0)
    best = F(scale * sumlx)
    for step in range(-9, 10):
        if step == 0:
            continue
        ls, sumlx, suml2 = quants(F(-F(F(nmax) + F(F(0.1) * F(step))) / vmax))
        if suml2 > 0 and F(sumlx * sumlx) > F(best * suml2):
            best_l = [li + nmax for li in ls]
            scale = F(sumlx / suml2)
            best = F(scale * sumlx)
    return scale, best_l


def _q6_k_ref_scalar(x: np.ndarray) -> bytes:
    """One row, k % 256 == 0: quantize_row_q6_K_ref on float32 scalars."""
    out = bytearray()
    for blk in np.asarray(x, F).reshape(-1, 256):
        scales, big_l = [], []
        max_scale, max_abs = F(0), F(0)
        for ib in range(16):
            s, ls = _make_qx_quants(blk[16 * ib : 16 * ib + 16])
            scales.append(s)
            big_l += ls
            if abs(s) > max_abs:
                max_abs, max_scale = F(abs(s)), s
        if max_abs < F(1e-15):
            out += bytes(210)
            continue
        iscale = F(F(-128) / max_scale)
        d16 = np.float16(F(F(1) / iscale))
        sc = [min(127, _nearest_int(F(iscale * s))) for s in scales]
        for j in range(16):
            d = F(F(d16) * F(sc[j]))
            if d == 0:
                continue
            for ii in range(16):
                big_l[16 * j + ii] = max(-32, min(31, _nearest_int(F(blk[16 * j + ii] / d)))) + 32
        ql, qh = bytearray(128), bytearray(64)
        for h in range(2):
            L = big_l[128 * h : 128 * h + 128]
            for lo in range(32):
                q1, q2, q3, q4 = L[lo], L[lo + 32], L[lo + 64], L[lo + 96]
                ql[64 * h + lo] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                ql[64 * h + lo + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                qh[32 * h + lo] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
        out += ql + qh + bytes(np.array(sc, np.int8).view(np.uint8)) + d16.astype("<f2").tobytes()
    return bytes(out)


def _hard_rows(rng) -> np.ndarray:
    """Rows of 512 values (2 super-blocks) with the corner cases of the algorithm."""
    rows = [
        rng.standard_normal(512) * 0.02,  # a head's scale
        rng.standard_normal(512),
        rng.laplace(size=512) * 3,  # heavy tails: small sub-scales next to large ones
        np.zeros(512),  # all-zero super-blocks
        np.concatenate([np.zeros(16), rng.standard_normal(496)]),  # one zero sub-block
        np.concatenate([np.full(16, 1e-20), rng.standard_normal(496)]),  # below GROUP_MAX_EPS
        np.where(rng.random(512) < 0.9, 0, rng.standard_normal(512)),  # sparse
        np.round(rng.standard_normal(512) * 8) / 4,  # exact ties in x / d
        -np.abs(rng.standard_normal(512)),  # negative max
        np.tile([1.0, -1.0], 256),
        np.concatenate([rng.standard_normal(511) * 1e-3, [50.0]]),  # one outlier
    ]
    return np.stack(rows).astype(F)


def test_spec_matches_llama_cpp_reference_scalar():
    rows = _hard_rows(np.random.default_rng(0))
    got = quantize_q6_k(rows)
    assert got.shape == (rows.shape[0], 420) and got.dtype == np.uint8
    for i, row in enumerate(rows):
        assert got[i].tobytes() == _q6_k_ref_scalar(row), i


def test_dequantize_matches_gguf_py_bit_for_bit():
    rng = np.random.default_rng(1)
    # arbitrary bytes (every code, scale and d bit pattern), d kept finite
    raw = rng.integers(0, 256, (6, 3 * 210), dtype=np.uint8)
    d = (rng.standard_normal((6, 3)) * 1e-2).astype("<f2").view(np.uint8).reshape(6, 3, 2)
    raw.reshape(6, 3, 210)[:, :, 208:] = d
    mine = dequantize_q6_k(raw, (6, 768))
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q6_K)
    assert theirs.shape == (6, 768)
    assert np.array_equal(mine.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    rows = _hard_rows(rng)
    q = quantize_q6_k(rows)
    back = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q6_K)
    assert np.array_equal(dequantize_q6_k(q, rows.shape), back)


def test_quantization_error_is_that_of_6_bits():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 2560)) * 0.05).astype(F)
    y = dequantize_q6_k(quantize_q6_k(x), x.shape)
    rel = np.sqrt(np.mean((y - x) ** 2) / np.mean(x * x))
    assert rel < 0.02, rel  # ~6 bits per value (Q8_0: ~0.4 %)
    sub = np.abs(x.reshape(-1, 16)).max(axis=1, keepdims=True)
    assert np.all(np.abs(y - x).reshape(-1, 16) <= sub / 16)  # within a code or so


def test_bad_shapes():
    with pytest.raises(ValueError, match="256"):
        quantize_q6_k(np.zeros((2, 128), F))
    with pytest.raises(ValueError, match="2-D"):
        quantize_q6_k(np.zeros(256, F))
    with pytest.raises(ValueError, match="bytes"):
        dequantize_q6_k(np.zeros(209, np.uint8), (1, 256))


def test_native_quantizer_is_bit_identical():
    from tribit import _core

    rng = np.random.default_rng(3)
    rows = _hard_rows(rng)
    big = (rng.standard_normal((257, 1024)) * 0.03).astype(F)
    for x in (rows, big, rows * F(1e4), rows * F(1e-6)):
        want = quantize_q6_k(x)
        for nt in (1, 2):
            assert np.array_equal(_core.quantize_q6_k(x, nt), want)
    with pytest.raises(ValueError, match="multiple of 256"):
        _core.quantize_q6_k(np.zeros((2, 100), F))
