"""Native kernels against the numpy specification (tribit.quant), every runnable ISA.

The ternary path is bit-exact: integer sums checked with gamma = scale = 1 (so y == S),
then the float epilogue checked bit for bit against `ternary_matmul_ref`. Float matmuls
(head, embeddings) are checked with a tolerance, their accumulation order being free.
K may be any value >= 1: weights are padded to a multiple of 128 with zero codes and the
binding pads activations with zeros (docs/FORMATS.md 1.5, docs/KERNELS.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tribit import _core
from tribit.quant import (
    dequantize_q6_k,
    dequantize_q8_0,
    dequantize_q8_k,
    f32_to_bf16,
    q6_k_q8_k_matmul_ref,
    quantize_activations,
    quantize_q6_k,
    quantize_q8_0,
    quantize_q8_k,
    ternary_matmul_ref,
)

ISAS = _core.runnable_isas()
SIMD = [i for i in ISAS if i != "generic"]
KINDS = ("gemv", "gemm")
# (m, k): k not a multiple of 32/128/256, the tiny-model and the real model widths
SHAPES = [
    (1, 1),
    (3, 31),
    (17, 64),
    (100, 96),
    (257, 160),
    (5, 192),
    (33, 127),
    (16, 129),
    (9, 300),
    (20, 1041),
    (4, 2560),
    (7, 6912),
]
N_TOKENS = [1, 2, 3, 4, 5, 7, 8, 13, 17, 64]


def _ternary(rng, m, k, p_zero=0.3):
    t = rng.choice(np.array([-1, 1], np.int8), size=(m, k))
    t[rng.random((m, k)) < p_zero] = 0
    return t


def _exact(w, t, q, isa, kind, n_threads=1):
    """Runs with scale = gamma = 1 so y must equal the integer sum S exactly."""
    n = q.shape[0]
    ones = np.ones(n, np.float32)
    sum_q = q.sum(axis=1, dtype=np.int32)
    y = _core.ternary_matmul(w, q, ones, sum_q, isa=isa, kind=kind, n_threads=n_threads)
    want = q.astype(np.int64) @ t.astype(np.int64).T
    return y, want


def test_isa_lists_are_consistent():
    assert "generic" in ISAS
    assert set(ISAS) <= set(_core.compiled_isas())
    assert _core.selected_isa() in ISAS
    info = _core.cpu_info()
    assert isinstance(info["name"], str) and isinstance(info["features"], list)
    if "avx2" in ISAS:
        assert {"avx2", "fma", "f16c"} <= set(info["features"])


@pytest.mark.parametrize("isa", ISAS)
def test_kernel_names_say_what_they_do(isa):
    names = _core.kernel_names(isa)
    assert set(names) >= {"quantize_act", "ternary_gemv", "ternary_gemm", "matmul_f16"}
    # a variant may inherit kernels from the one below it (avx512 <- avx2 <- generic)
    inherited = {
        "generic": {"generic"},
        "avx2": {"generic", "avx2"},
        "neon": {"generic", "neon"},
        "avx512": {"generic", "avx2", "avx512", "avx512vnni"},  # avx512: AVX-512F, no VNNI
    }[isa]
    for op, name in names.items():
        assert name.startswith(op.split("_")[0]), (op, name)
        assert name.rsplit("_", 1)[1] in inherited, (op, name)
    for op in ("ternary_gemv", "ternary_gemm"):
        assert isa in names[op], names[op]  # avx512 names say avx512vnni


# ---------------------------------------------------------------- quantize_act
def _act_cases(rng):
    tie = np.concatenate([[127.0], np.arange(-127, 127) + 0.5]).astype(np.float32)  # scale 1
    yield "random", rng.standard_normal((5, 300)).astype(np.float32)
    yield "ties", np.stack([tie, -tie, tie / 2])  # x*scale exactly k + 0.5: half to even
    yield "zeros", np.zeros((2, 64), np.float32)  # amax floor 1e-5
    yield "tiny", np.full((1, 37), 1e-7, np.float32)  # below the floor
    huge = rng.standard_normal((2, 129)).astype(np.float32)
    huge[:, 5] = 3e38
    yield "huge", huge
    yield "alternating", np.tile(np.float32([1.0, -1.0]), (3, 65))
    yield "odd_k", rng.standard_normal((4, 1)).astype(np.float32) * 1e3
    yield "long", rng.laplace(size=(2, 6912)).astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_act_bit_exact(isa):
    rng = np.random.default_rng(0)
    for name, x in _act_cases(rng):
        q, scale, sum_q = _core.quantize_act(x, isa=isa)
        wq, ws, wsum = quantize_activations(x)
        assert q.dtype == np.int8 and scale.dtype == np.float32 and sum_q.dtype == np.int32
        np.testing.assert_array_equal(q, wq, err_msg=name)
        assert scale.tobytes() == ws.tobytes(), name
        np.testing.assert_array_equal(sum_q, wsum, err_msg=name)


def test_quantize_act_rounds_half_to_even():
    x = np.float32([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5]])
    q, scale, _ = _core.quantize_act(x)
    assert scale[0] == 1.0
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, 126]]


# ---------------------------------------------------------------- ternary sums
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_ternary_integer_sums_exact(isa, kind):
    rng = np.random.default_rng(1)
    for i, (m, k) in enumerate(SHAPES):
        t = _ternary(rng, m, k)
        w = _core.pack_ternary(t, 1.0)
        assert (w.m, w.k, w.k_pad) == (m, k, -(-k // 128) * 128)
        for n in N_TOKENS if k <= 300 else [1, 5]:
            if (i + n) % 2 and n > 8:
                continue  # keep the test fast: half of the big-n cases per shape
            q = rng.integers(-128, 128, (n, k), dtype=np.int8)
            y, want = _exact(w, t, q, isa, kind)
            assert y.shape == (n, m) and y.dtype == np.float32
            np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=f"{m}x{k} n={n}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_ternary_hostile_activations(isa, kind):
    """Extremes of the int16 stage: all codes 2 (t=+1) or 0 (t=-1) times +-127/-128."""
    k = 128 * 15 * 2 + 77  # two int16 flush periods (15 blocks) plus a tail
    rows = [np.ones(k), -np.ones(k), np.zeros(k), np.resize([1, -1], k), np.resize([-1, 1], k)]
    t = np.array(rows, np.int8)
    w = _core.pack_ternary(t, 1.0)
    acts = [
        np.full(k, 127),
        np.full(k, -128),
        np.resize([127, -128], k),
        np.zeros(k),
        np.resize([-128, 127], k),
        np.eye(1, k, k - 1)[0] * -128,
    ]
    q = np.array(acts, np.int8)
    y, want = _exact(w, t, q, isa, kind)
    np.testing.assert_array_equal(y, want.astype(np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_ternary_epilogue_bit_exact(isa, kind):
    """The whole BitLinear: quantize -> sum -> float(S) * (gamma / scale), bit for bit."""
    rng = np.random.default_rng(2)
    for m, k, n in [(17, 160, 1), (100, 96, 3), (257, 192, 17), (64, 2560, 4), (3, 1, 2)]:
        t = _ternary(rng, m, k)
        gamma = np.float32(rng.uniform(0.01, 2.0))
        x = (rng.standard_normal((n, k)) * rng.uniform(0.01, 50, (n, 1))).astype(np.float32)
        q, scale, sum_q = _core.quantize_act(x, isa=isa)
        w = _core.pack_ternary(t, gamma)
        y = _core.ternary_matmul(w, q, scale, sum_q, isa=isa, kind=kind)
        want = ternary_matmul_ref(t, gamma, *quantize_activations(x)[:2])
        assert y.tobytes() == want.tobytes(), (m, k, n)


@pytest.mark.parametrize("kind", KINDS)
def test_simd_equals_generic_and_threads_agree(kind):
    rng = np.random.default_rng(3)
    for m, k, n in [(257, 192, 17), (100, 1041, 64), (640, 2560, 2)]:
        t = _ternary(rng, m, k)
        w = _core.pack_ternary(t, np.float32(0.37))
        x = rng.standard_normal((n, k)).astype(np.float32)
        q, scale, sum_q = _core.quantize_act(x, isa="generic")
        base = _core.ternary_matmul(w, q, scale, sum_q, isa="generic", kind=kind)
        for isa in ISAS:
            for nt in (1, 2, 3):
                y = _core.ternary_matmul(w, q, scale, sum_q, isa=isa, kind=kind, n_threads=nt)
                assert y.tobytes() == base.tobytes(), (isa, nt, m, k, n)


def test_a_wrong_sum_fails():
    """The check can fail: a flipped weight changes S."""
    rng = np.random.default_rng(4)
    t = _ternary(rng, 8, 130)
    q = rng.integers(1, 127, (2, 130), dtype=np.int8)
    bad = t.copy()
    bad[3, 129] = 1 if bad[3, 129] != 1 else -1
    y, want = _exact(_core.pack_ternary(bad, 1.0), t, q, "generic", "gemv")
    assert not np.array_equal(y, want.astype(np.float32))


def test_bad_inputs_are_rejected():
    t = np.zeros((4, 64), np.int8)
    t[0, 0] = 2
    with pytest.raises(ValueError, match="-1, 0, 1"):
        _core.pack_ternary(t, 1.0)
    w = _core.pack_ternary(np.zeros((4, 64), np.int8), 1.0)
    q = np.zeros((1, 63), np.int8)
    with pytest.raises(ValueError, match="columns"):
        _core.ternary_matmul(w, q, np.ones(1, np.float32), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="kind"):
        _core.ternary_matmul(
            w,
            np.zeros((1, 64), np.int8),
            np.ones(1, np.float32),
            np.zeros(1, np.int32),
            kind="nope",
        )
    with pytest.raises(ValueError, match="ISA"):
        _core.quantize_act(np.zeros((1, 8), np.float32), isa="sse9")


# ---------------------------------------------------------------- float matmul
def _float_matrix(rng, qtype, m, k):
    w = rng.standard_normal((m, k)).astype(np.float32)
    if qtype == "f32":
        return _core.FloatMatrix(w, "f32", m, k), w
    if qtype == "f16":
        h = w.astype(np.float16)
        return _core.FloatMatrix(h, "f16", m, k), h.astype(np.float32)
    if qtype == "bf16":
        b = f32_to_bf16(w)
        return _core.FloatMatrix(b, "bf16", m, k), (b.astype(np.uint32) << 16).view(np.float32)
    if qtype == "q6_k":
        raw = quantize_q6_k(w)
        return _core.FloatMatrix(raw, "q6_k", m, k), dequantize_q6_k(raw, (m, k))
    raw = quantize_q8_0(w)
    return _core.FloatMatrix(raw, "q8_0", m, k), dequantize_q8_0(raw, (m, k))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16"])
def test_head_rows_are_the_same_alone_or_in_a_batch(isa, qtype):
    """A token's head logits do not depend on how many tokens share the call (decode of
    1 stream vs 2-14 batched streams): every kernel sums each (row, token) in one order."""
    rng = np.random.default_rng(8)
    for m, k in [(7, 37), (33, 2560), (5, 200), (9, 64)]:
        fm, _ = _float_matrix(rng, qtype, m, k)
        x = rng.standard_normal((14, k)).astype(np.float32)
        alone = np.concatenate([_core.float_matmul(fm, x[j : j + 1], isa=isa) for j in range(14)])
        # AVX2 blocks from 6 tokens on, in groups of 12: 13 and 14 cross a group
        for n in (2, 3, 4, 5, 6, 7, 8, 9, 13, 14):
            together = _core.float_matmul(fm, x[:n], isa=isa, n_threads=2)
            np.testing.assert_array_equal(together.view(np.uint32), alone[:n].view(np.uint32))


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(ISAS), reason="needs a CPU with AVX-512 VNNI")
@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16"])
def test_avx512_head_tiles_sum_as_avx2(qtype):
    """The AVX-512 head's 4-row x 2-token tiles keep the AVX2 kernel's order for every
    (row, token): the same bits for odd row counts, lengths (32-steps, 8-steps, scalar
    tails) and batch sizes, with any thread split."""
    rng = np.random.default_rng(11)
    for m, k in [(1, 37), (7, 64), (13, 2560), (6, 200), (9, 33), (130, 96), (4, 7)]:
        fm, _ = _float_matrix(rng, qtype, m, k)
        for n in (1, 2, 3, 5, 8):
            x = rng.standard_normal((n, k)).astype(np.float32)
            want = _core.float_matmul(fm, x, isa="avx2")
            for nt in (1, 2, 3):
                got = _core.float_matmul(fm, x, isa="avx512", n_threads=nt)
                np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16", "q8_0", "q6_k"])
def test_float_matmul(isa, qtype):
    rng = np.random.default_rng(5)
    for m, k, n in [
        (1, 32, 1),
        (3, 96, 2),
        (17, 64, 5),
        (130, 160, 4),
        (33, 2560, 1),
        (5, 1, 3),
        (9, 37, 7),
        (3, 256, 1),
        (70, 512, 4),
        (11, 768, 9),
    ]:
        if (qtype == "q8_0" and k % 32) or (qtype == "q6_k" and k % 256):
            continue
        fm, dense = _float_matrix(rng, qtype, m, k)
        x = rng.standard_normal((n, k)).astype(np.float32)
        want = x.astype(np.float64) @ dense.astype(np.float64).T
        bound = 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(dense).astype(np.float64).T) + 1e-30
        for nt in (1, 2):
            y = _core.float_matmul(fm, x, isa=isa, n_threads=nt)
            assert y.shape == (n, m) and y.dtype == np.float32
            assert np.all(np.abs(y - want) <= bound), (qtype, m, k, n, nt)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16", "q8_0", "q6_k"])
def test_float_rows_are_the_dequantized_rows(isa, qtype):
    """The embedding lookup: bit-identical to the numpy dequantization (for Q6_K also
    gguf-py's, tests/test_kquants.py), on every ISA."""
    rng = np.random.default_rng(6)
    fm, dense = _float_matrix(rng, qtype, 13, 512)
    rows = np.array([0, 12, 5, 5, 7], np.int64)
    got = _core.float_rows(fm, rows, isa=isa)
    assert got.dtype == np.float32 and np.array_equal(got, dense[rows])
    with pytest.raises(ValueError, match="out of range"):
        _core.float_rows(fm, np.array([13], np.int64), isa=isa)


@pytest.mark.parametrize("isa", SIMD)
def test_q6_k_simd_agrees_with_generic(isa):
    """Q6_K head on real-model widths and token counts: a SIMD kernel against the
    generic one (the defining arithmetic), to float32 rounding, 1 and 2 threads."""
    rng = np.random.default_rng(7)
    for m, k in [(97, 2560), (40, 6912), (300, 256)]:
        w = (rng.standard_normal((m, k)) * 0.05).astype(np.float32)
        w[3, :256] = 0  # an all-zero super-block
        fm = _core.FloatMatrix(quantize_q6_k(w), "q6_k", m, k)
        for n in (1, 2, 3, 4, 5, 8):
            x = rng.standard_normal((n, k)).astype(np.float32)
            ref = _core.float_matmul(fm, x, isa="generic")
            scale = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T
            for nt in (1, 2):
                y = _core.float_matmul(fm, x, isa=isa, n_threads=nt)
                assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-30), (m, k, n, nt)


# ------------------------------------------- q6_k head: the integer path (q8_K)
def _q8_k_blocks(rng, n, k):
    """float32 activations (n, k) with the quantizer's corner cases in some blocks: an
    all-zero block, exact ties (iscale = 1: codes x.5 round half to even), equal |max|
    of both signs (the first wins), a negative and a positive max, huge and tiny values."""
    x = rng.standard_normal((n, k)).astype(np.float32)
    b = x.reshape(-1, 256)
    b[0] = 0
    if len(b) > 1:
        b[1] = np.arange(256) % 11 - 5.5
        b[1, 7] = -127  # max = -127: iscale = 1 exactly
    if len(b) > 2:
        b[2, 3], b[2, 9] = 40, -40
    if len(b) > 3:
        b[3] *= 1e30
    if len(b) > 4:
        b[4] *= 1e-30
    return x


@pytest.mark.parametrize("isa", ISAS)
def test_quantize_q8_k_is_the_spec(isa):
    """The head's activation quantizer: the bytes of llama.cpp's quantize_row_q8_K_ref
    (the numpy spec quantize_q8_k), every ISA; d * qs within d / 2 of x."""
    rng = np.random.default_rng(21)
    for n, k in [(1, 256), (2, 512), (3, 1280), (5, 2560), (9, 768), (1, 6912)]:
        x = _q8_k_blocks(rng, n, k)
        want = quantize_q8_k(x)
        assert want.shape == (n, k // 256 * 292)
        got = _core.quantize_q8_k(x, isa=isa)
        assert got.dtype == np.uint8 and np.array_equal(got, want), (n, k)
        blocks = want.reshape(-1, 292)
        d = blocks[:, :4].copy().view("<f4")[:, 0]
        qs = blocks[:, 4:260].view(np.int8)
        assert np.array_equal(
            blocks[:, 260:].copy().view("<i2"), qs.reshape(-1, 16, 16).sum(axis=2)
        )
        err = np.abs(dequantize_q8_k(want) - x).reshape(-1, 256)
        assert np.all(err <= np.abs(d)[:, None] * 0.5000001 + 1e-45)
    # the sign convention: the value of largest |x| gets code -127 (d has the other sign)
    x = np.zeros((1, 256), np.float32)
    x[0, 5], x[0, 6] = 2.0, -2.0
    q = _core.quantize_q8_k(x, isa=isa)
    assert q[0, 4 + 5].view(np.int8) == -127 and q[0, 4 + 6].view(np.int8) == 127
    assert q[0, :4].view("<f4")[0] == np.float32(1) / (np.float32(-127) / np.float32(2))
    with pytest.raises(ValueError, match="multiple of 256"):
        _core.quantize_q8_k(np.zeros((1, 100), np.float32), isa=isa)


def _q6_k_raw(rng, m, k):
    """Q6_K rows with every code and every int8 scale (-128 too), d in [0.5, 2]."""
    raw = rng.integers(0, 256, (m, k // 256 * 210), dtype=np.uint8)
    blk = raw.reshape(m, -1, 210)
    d = rng.uniform(0.5, 2, blk.shape[:2]).astype("<f2")
    blk[:, :, 208:] = d.view(np.uint8).reshape(m, -1, 2)
    return raw


def _q8_k_raw(rng, n, k, d=None):
    """q8_K rows with codes over the whole int8 range (-128 too) and consistent bsums."""
    nb = n * k // 256
    qs = rng.integers(-128, 128, (nb, 256)).astype(np.int8)
    out = np.empty((nb, 292), np.uint8)
    dd = rng.uniform(0.5, 2, nb) if d is None else np.full(nb, d)
    out[:, :4] = dd.astype("<f4").view(np.uint8).reshape(nb, 4)
    out[:, 4:260] = qs.view(np.uint8)
    out[:, 260:] = qs.reshape(nb, 16, 16).sum(axis=2).astype("<i2").view(np.uint8).reshape(nb, 32)
    return out.reshape(n, -1)


@pytest.mark.parametrize("isa", ISAS)
def test_q6_k_q8_k_integer_sums_are_exact(isa):
    """One super-block with d_w = d_x = 1 and |S| < 2^24: y is the exact integer sum
    sum_i (q6_i - 32) * qs_i * scale_{i // 16}, extreme codes and scales included."""
    rng = np.random.default_rng(22)
    m, n = 257, 9
    raw = _q6_k_raw(rng, m, 256)
    blk = raw.reshape(m, 210)
    blk[:, 192:208] = rng.integers(-4, 5, (m, 16)).astype(np.int8).view(np.uint8)
    blk[0, :192], blk[0, 192:208] = 0xFF, np.uint8(0x80)  # all codes 63, scales -128 ...
    blk[:, 208:] = np.frombuffer(np.float16(1).tobytes(), np.uint8)
    q = _q8_k_raw(rng, n, 256, d=1.0)
    q[0, 4:260] = 0x80  # ... against codes -128: |S| = 16 * 16 * 31 * 128 * 128
    q[0, 260:] = np.full(16, -2048, "<i2").view(np.uint8)
    codes = dequantize_q6_k(raw, (m, 256)).astype(np.int64)  # d = 1: (q6 - 32) * scale exactly
    s = q[:, 4:260].view(np.int8).astype(np.int64) @ codes.T
    assert np.abs(s[:, 1:]).max() < 1 << 24 and s[0, 0] == 16 * 16 * 31 * 128 * 128
    y = _core.matmul_q6_k_q8_k(_core.FloatMatrix(raw, "q6_k", m, 256), q, isa=isa, n_threads=3)
    assert np.array_equal(y[:, 1:], s[:, 1:].astype(np.float32))
    assert y[0, 0] == np.float32(s[0, 0])


@pytest.mark.parametrize("isa", ISAS)
def test_q6_k_q8_k_is_the_spec_on_odd_shapes(isa):
    """The integer path, every ISA, bit for bit the numpy spec (exact block sums, then
    acc + (d_w * d_x) * S_b in block order): rows 1..257, k up to 6912, 1-9 tokens, 1-3
    threads; a token gives the same bits alone as in a batch."""
    rng = np.random.default_rng(23)
    cases = [
        (1, 256, 1),
        (2, 512, 9),
        (7, 768, 3),
        (64, 2560, 1),
        (65, 2560, 5),
        (130, 1280, 4),
        (257, 256, 8),
        (33, 6912, 2),
        (5, 6912, 7),
        (100, 512, 6),
    ]
    for m, k, n in cases:
        raw = _q6_k_raw(rng, m, k)
        fm = _core.FloatMatrix(raw, "q6_k", m, k)
        for q in (_q8_k_raw(rng, n, k), quantize_q8_k(_q8_k_blocks(rng, n, k))):
            want = q6_k_q8_k_matmul_ref(raw, q, k)
            for nt in (1, 2, 3):
                y = _core.matmul_q6_k_q8_k(fm, q, isa=isa, n_threads=nt)
                assert y.shape == (n, m) and y.dtype == np.float32
                assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), (m, k, n, nt)
            alone = np.concatenate(
                [_core.matmul_q6_k_q8_k(fm, q[j : j + 1], isa=isa) for j in range(n)]
            )
            assert np.array_equal(alone.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="bytes per token"):
        _core.matmul_q6_k_q8_k(fm, np.zeros((1, 292), np.uint8), isa=isa)


@pytest.mark.parametrize("isa", ISAS)
def test_q6_k_q8_k_is_close_to_the_float_head(isa):
    """What the activation quantization costs a head row: |y - x.W| within the q8_K
    rounding bound sum_i |W_i| * d_x / 2 (+ float32 rounding)."""
    rng = np.random.default_rng(24)
    m, k, n = 97, 2560, 4
    w = (rng.standard_normal((m, k)) * 0.05).astype(np.float32)
    raw = quantize_q6_k(w)
    dense = dequantize_q6_k(raw, (m, k)).astype(np.float64)
    x = rng.standard_normal((n, k)).astype(np.float32)
    q = quantize_q8_k(x)
    y = _core.matmul_q6_k_q8_k(_core.FloatMatrix(raw, "q6_k", m, k), q, isa=isa)
    d = np.abs(q.reshape(n, -1, 292)[:, :, :4].copy().view("<f4")[:, :, 0]).astype(np.float64)
    bound = (np.abs(dense).reshape(m, -1, 256).sum(axis=2) @ d.T).T * 0.5
    bound += 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(dense).T)
    assert np.all(np.abs(y - x.astype(np.float64) @ dense.T) <= bound)


def test_float_matrix_checks_sizes():
    with pytest.raises(ValueError, match="size"):
        _core.FloatMatrix(np.zeros((4, 10), np.float32), "f32", 4, 11)
    with pytest.raises(ValueError, match="k is invalid"):
        _core.FloatMatrix(np.zeros((4, 34), np.uint8), "q8_0", 4, 33)
    with pytest.raises(ValueError, match="k is invalid"):
        _core.FloatMatrix(np.zeros((4, 210), np.uint8), "q6_k", 4, 128)
    with pytest.raises(ValueError, match="size"):
        _core.FloatMatrix(np.zeros((4, 209), np.uint8), "q6_k", 4, 256)
    with pytest.raises(ValueError, match="float type"):
        _core.FloatMatrix(np.zeros((4, 10), np.float32), "f8", 4, 10)


def _dot_in_fixed_order(a: np.ndarray, b: np.ndarray) -> float:
    """kernels.h's order: eight partial sums over the whole 8-blocks, paired
    ((p0+p4)+(p2+p6))+((p1+p5)+(p3+p7)), then the tail one by one."""
    prod = a.astype(np.float64) * b.astype(np.float64)  # exact
    n8 = len(a) // 8 * 8
    p = np.zeros(8)
    for row in prod[:n8].reshape(-1, 8):
        p = p + row
    s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]))
    for v in prod[n8:]:
        s += v
    return float(s)


@pytest.mark.parametrize("isa", ISAS)
def test_attention_kernels_are_exact_double_in_one_order(isa):
    """Attention's dot/axpy run in double in the order kernels.h fixes, on every ISA
    (bit-identical to a numpy model of it), and over an f16 cache row widened on
    load exactly as over the converted f32 row."""
    rng = np.random.default_rng(5)
    for n in (1, 7, 8, 15, 16, 17, 64, 96, 128, 131):
        a = rng.standard_normal(n).astype(np.float32)
        h = (rng.standard_normal(n) * 3).astype(np.float16)
        bits, wide = h.view(np.uint16), h.astype(np.float32)
        d16, d32 = _core.dot_f16(a, bits, isa=isa), _core.dot(a, wide, isa=isa)
        assert d16 == d32 == _dot_in_fixed_order(a, wide), n
        y = rng.standard_normal(n)
        y16, y32 = _core.axpy_f16(y, 0.37, bits, isa=isa), _core.axpy(y, 0.37, wide, isa=isa)
        np.testing.assert_array_equal(y16.view(np.uint64), y32.view(np.uint64))
        np.testing.assert_array_equal(y32, y + 0.37 * wide.astype(np.float64))
    with pytest.raises(ValueError, match="lengths differ"):
        _core.dot_f16(np.zeros(3, np.float32), np.zeros(4, np.uint16), isa=isa)


@pytest.mark.parametrize("isa", ISAS)
def test_attention_row_kernels_equal_one_row_at_a_time(isa):
    """dot_rows (a GQA group against a run of cache rows) gives each (query row, cache
    row) exactly what dot gives it alone, for group sizes and run lengths around the
    kernels' tiles."""
    rng = np.random.default_rng(6)
    for rows in (1, 2, 3, 4, 5, 7, 8, 9, 16):
        for n in (1, 7, 8, 17, 64, 128, 131):
            for length in (1, 3, 4, 5, 9):
                a = rng.standard_normal((rows, n)).astype(np.float32)
                h = (rng.standard_normal((length, n)) * 3).astype(np.float16)
                bits, wide = h.view(np.uint16), h.astype(np.float32)
                want = np.array(
                    [
                        [_core.dot(a[g], wide[t], isa=isa) for t in range(length)]
                        for g in range(rows)
                    ]
                )
                for got in (_core.dot_rows(a, wide, isa=isa), _core.dot_rows_f16(a, bits, isa=isa)):
                    assert got.shape == (rows, length)
                    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))
    with pytest.raises(ValueError, match="lengths differ"):
        _core.dot_rows(np.zeros((2, 3), np.float32), np.zeros((1, 4), np.float32), isa=isa)


def test_softmax_exp_is_one_function_on_every_isa():
    """Softmax's exponentials: the same bits on every ISA (one polynomial, kernels.h),
    within 2 ulp of exp, 0 below -708 and for -inf, NaN kept; the sum in the fixed order
    of eight partial sums then the tail."""
    rng = np.random.default_rng(9)
    cases = [rng.uniform(-40, 0, n) for n in (1, 7, 8, 9, 16, 33, 128)]
    cases.append(
        np.array([0.0, -1e-300, -0.5 * np.log(2), -707.9, -708.0, -708.1, -745.0, -np.inf, -1e308])
    )
    cases.append(rng.uniform(-1, 0, 12) * 1e-8)
    for x in cases:
        mx = 0.25
        got = {isa: _core.softmax_exp(x + mx, mx, isa=isa) for isa in ISAS}
        e, s = got["generic"]
        for isa, (ei, si) in got.items():
            np.testing.assert_array_equal(ei.view(np.uint64), e.view(np.uint64), err_msg=isa)
            assert si == s, isa
        want = np.exp(x)
        keep = x >= -708.0
        assert np.all(np.abs(e[keep] - want[keep]) <= 2 * np.spacing(want[keep]))
        assert np.all(e[~keep] == 0.0)
        n8 = len(e) // 8 * 8
        p = np.zeros(8)
        for row in e[:n8].reshape(-1, 8):  # block by block, as the kernels add them
            p = p + row
        order = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]))
        for v in e[n8:]:
            order += v
        assert s == order
    e, s = _core.softmax_exp(np.array([0.0, np.nan, -1.0]), 0.0)
    assert np.isnan(e[1]) and np.isnan(s)


@pytest.mark.parametrize("isa", ISAS)
def test_weighted_sum_equals_axpy_per_cache_row(isa):
    """wsum_rows (attention's weighted values) is exactly `len` axpy calls in t order on
    zeroed rows, f32 and f16 cache rows alike, for odd group sizes and widths."""
    rng = np.random.default_rng(7)
    for rows in (1, 3, 4, 5, 8):
        for n in (1, 7, 8, 17, 128, 131):
            for length in (1, 2, 9, 40):
                coef = rng.random((rows, length))
                h = (rng.standard_normal((length, n)) * 3).astype(np.float16)
                bits, wide = h.view(np.uint16), h.astype(np.float32)
                want = np.zeros((rows, n))
                for t in range(length):
                    want = np.stack(
                        [_core.axpy(want[g], coef[g, t], wide[t], isa=isa) for g in range(rows)]
                    )
                for got in (
                    _core.wsum_rows(coef, wide, isa=isa),
                    _core.wsum_rows_f16(coef, bits, isa=isa),
                ):
                    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_probe_read_bandwidth_is_positive():
    assert _core.probe_read_bandwidth(nbytes=1 << 20, n_threads=2, reps=1) > 0


@pytest.mark.parametrize("isa", ISAS)
def test_probe_mac_peak(isa):
    """SIMD variants have a compute-roof probe; generic has none (None, not 0)."""
    peak = _core.probe_mac_peak(n_threads=2, isa=isa, iters=1 << 12, reps=1)
    if isa in ("avx2", "avx512"):
        assert peak > 0
    else:
        assert peak is None
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.probe_mac_peak(isa="sse9")


def test_bench_kernels_records(capsys):
    """The benchmark's plumbing on tiny shapes (no timing is asserted)."""
    from tribit.bench.kernels import bench_kernels, format_table
    from tribit.cli.main import main

    recs = bench_kernels(
        threads=[1, 2],
        reps=1,
        isas=ISAS,
        shapes=[(64, 200)],
        head=(48, 256),
        gemm_n=5,
        stack_bytes=1 << 13,
        probe_bytes=1 << 20,
    )
    keys = {
        "op",
        "qtype",
        "isa",
        "m",
        "k",
        "n",
        "threads",
        "median_s",
        "gbps",
        "gmacs",
        "bw_gbps",
        "ratio",
    }
    assert all(keys <= set(r) for r in recs)
    ops = {(r["op"], r["isa"], r["threads"]) for r in recs}
    for isa in ISAS:
        for t in (1, 2):
            for op in (
                "ternary_gemv",
                "ternary_gemm",
                "matmul_f16",
                "matmul_q8_0",
                "matmul_q6_k",
                "matmul_q6_k_q8_k",
            ):
                assert (op, isa, t) in ops
    gemv = next(r for r in recs if r["op"] == "ternary_gemv")
    assert gemv["copies"] == 2 and gemv["m"] == 64 and gemv["median_s"] > 0
    for r in recs:
        if r["op"] != "ternary_gemm":
            continue
        if r["isa"] in ("avx2", "avx512"):  # GEMM against the probed compute roof
            peak = next(
                p
                for p in recs
                if p["op"] == "mac_peak" and p["isa"] == r["isa"] and p["threads"] == r["threads"]
            )
            assert r["mac_peak_gmacs"] == peak["gmacs"] > 0
            assert r["mac_ratio"] == pytest.approx(r["gmacs"] / peak["gmacs"])
        else:
            assert r["mac_peak_gmacs"] is None and r["mac_ratio"] is None
    assert all(r["mac_ratio"] is None for r in recs if r["op"].startswith("matmul_"))
    q6 = next(r for r in recs if r["op"] == "matmul_q6_k")
    assert q6["kernel"].startswith("matmul_q6_k_") and q6["qtype"] == "q6_k"
    assert q6["m"] == 48 and q6["k"] == 256 and q6["gbps"] > 0
    table = format_table(recs)
    assert "ternary_gemm" in table and "roof" in table
    if set(ISAS) & {"avx2", "avx512"}:
        assert "mac_peak probe" in table
    with pytest.raises(ValueError, match="cannot run"):
        bench_kernels(isas=["sse9"])
    assert main(["bench"]) == 0 and "tribit bench kernels" in capsys.readouterr().out
    assert main(["info", "--json"]) == 0 and _core.selected_isa() in capsys.readouterr().out


# ---------------------------------------------------------------- TRIBIT_ISA
def _run_with_isa(isa):
    code = "import tribit._core as c; print(c.selected_isa())"
    env = dict(os.environ, TRIBIT_ISA=isa)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("isa", ISAS)
def test_tribit_isa_forces_a_variant(isa):
    r = _run_with_isa(isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


@pytest.mark.parametrize(
    "isa", [i for i in ("generic", "avx2", "avx512", "neon") if i not in ISAS] + ["sse9"]
)
def test_tribit_isa_fails_loudly(isa):
    r = _run_with_isa(isa)
    assert r.returncode != 0
    assert f"TRIBIT_ISA={isa}" in r.stderr
