"""Q2_0 / Q1_0 (ggml types 42 / 41): the numpy spec against mainline ggml's own compiled
code (ctypes into llama-cpp-python's libraries: quantizers, dequantizers, the run-time Q8_0
activation quantizer and vec_dot), and the native kernels bit-exact against the spec on
every runnable ISA, odd shapes, 1-3 threads (docs/FORMATS.md 3.11, KERNELS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from ggml_lib import Q1_0, Q2_0, Q8_0
from ggml_lib import load as load_ggml
from tribit import _core
from tribit.quant import lowbit

TYPES = [("q2_0", Q2_0, lowbit.quantize_row_q2_0_ref), ("q1_0", Q1_0, lowbit.quantize_row_q1_0_ref)]
ISAS = _core.runnable_isas()


@pytest.fixture(scope="module")
def ggml():
    g = load_ggml()
    if g is None:
        pytest.skip("llama-cpp-python (mainline ggml) is not installed")
    return g


def _weights(rng, m: int, k: int) -> np.ndarray:
    """Rows with exact ties, zero blocks, +-0, and ordinary values."""
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 3, (m, 1))).astype(np.float32)
    x[0, :64] = 0
    if m > 1:
        x[1, :128] = 1.0
        x[1, 3] = -0.5  # round(-0.5) = -1: half away from zero
        x[1, 5] = 0.5
    if m > 2:
        x[2, 7] = -0.0
    return x


def _random_blocks(rng, m: int, k: int, qtype: str) -> np.ndarray:
    """Arbitrary bytes (every code, Q2_0's 3 included) with finite f16 scales."""
    raw = rng.integers(0, 256, (m, lowbit.row_bytes(qtype, k))).astype(np.uint8)
    raw.reshape(m, -1, 18)[:, :, 1] &= 0x3B
    return raw


@pytest.mark.parametrize("qtype,typ,quant", TYPES)
def test_spec_matches_ggml(ggml, qtype, typ, quant):
    rng = np.random.default_rng(0)
    x = _weights(rng, 7, 512)
    assert np.array_equal(quant(x), ggml.quantize_ref(typ, x))
    raw = _random_blocks(rng, 7, 512, qtype)
    got = lowbit.dequantize(raw, (7, 512), qtype)
    assert np.array_equal(got.view(np.uint32), ggml.dequantize(typ, raw, (7, 512)).view(np.uint32))
    assert ggml.row_bytes(typ, 512) == lowbit.row_bytes(qtype, 512)


def test_q8_0_activations_match_llama_cpp(ggml):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 256)) * 3).astype(np.float32)
    x[0, :32] = 0
    x[1, :32] = np.arange(32, dtype=np.float32) - 15.5  # exact ties after scaling
    q, d = lowbit.quantize_act_q8_0(x)
    b = ggml.quantize_runtime(Q8_0, x).reshape(5, -1, 34)
    assert np.array_equal(b[:, :, 2:].view(np.int8).reshape(5, -1), q)
    assert np.array_equal(b[:, :, :2].copy().view("<f2")[:, :, 0].astype(np.float32), d)


@pytest.mark.parametrize("qtype,typ,quant", TYPES)
def test_mode_a_matches_llama_cpp(ggml, qtype, typ, quant):
    """Bit for bit what llama.cpp's CPU matmul computes: Q2_0 its generic C order, Q1_0 its
    x86 AVX2 order (8 float lanes with FMA, ggml-cpu/arch/x86/quants.c), which the spec
    follows; a ggml built without AVX2 sums Q1_0 in its generic order instead."""
    if qtype == "q1_0" and not ggml.avx2:
        pytest.skip("this ggml has no AVX2 Q1_0 dot, the order mode (a) follows")
    rng = np.random.default_rng(2)
    m, k = 9, 768
    raw = _random_blocks(rng, m, k, qtype)
    x = (rng.standard_normal((3, k)) * 2).astype(np.float32)
    q, d = lowbit.quantize_act_q8_0(x)
    ours = lowbit.matmul_q8(raw, (m, k), qtype, q, d)
    theirs = ggml.matmul(typ, raw, (m, k), x)
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def test_quantizers_edge_cases():
    x = np.zeros((2, 128), np.float32)
    x[1] = -1.0
    q2 = lowbit.quantize_row_q2_0_ref(x)
    assert np.array_equal(lowbit.dequantize(q2, (2, 128), "q2_0"), x)
    q1 = lowbit.quantize_row_q1_0_ref(x)
    # an all-zero Q1_0 block has d = 0: every value is +-0
    assert np.array_equal(lowbit.dequantize(q1, (2, 128), "q1_0"), x)
    with pytest.raises(ValueError, match="multiple of 64"):
        lowbit.quantize_row_q2_0_ref(np.zeros((1, 96), np.float32))
    with pytest.raises(ValueError, match="multiple of 128"):
        lowbit.row_bytes("q1_0", 64)


def test_code_three_is_plus_two():
    raw = np.zeros((1, 18), np.uint8)
    raw[0, :2] = np.array([1.5], "<f2").view(np.uint8)
    raw[0, 2] = 0b11_10_01_00  # codes 0, 1, 2, 3 -> -1, 0, 1, 2
    vals = lowbit.dequantize(raw, (1, 64), "q2_0")[0, :4]
    assert vals.tolist() == [-1.5, 0.0, 1.5, 3.0]


SHAPES = [
    (1, 128, 1),
    (7, 128, 2),
    (13, 256, 3),
    (37, 384, 5),
    (64, 1024, 4),
    (9, 2048, 9),
    (130, 640, 17),
]


@pytest.mark.parametrize("qtype", ["q2_0", "q1_0"])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_kernels_bit_exact(qtype, m, k, n):
    if k % lowbit.BLOCK_VALUES[qtype]:
        pytest.skip("k is not a multiple of the block")
    rng = np.random.default_rng(m * 1000 + k + n)
    raw = _random_blocks(rng, m, k, qtype)
    w = _core.pack_group(raw, qtype, m, k)
    x = (rng.standard_normal((n, k)) * rng.uniform(0.1, 4, (n, 1))).astype(np.float32)
    q, d = lowbit.quantize_act_q8_0(x)
    want = lowbit.matmul_q8(raw, (m, k), qtype, q, d)
    bsum = q.reshape(n, -1, 32).astype(np.int32).sum(axis=2)
    for isa in ISAS:
        qq, dd, bs = _core.quantize_q8_0(x, isa)
        assert np.array_equal(qq, q) and np.array_equal(dd, d) and np.array_equal(bs, bsum), isa
        for threads in (1, 2, 3):
            y = _core.group_matmul(w, qq, dd, bs, isa, threads)
            assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), (isa, threads)
    assert np.array_equal(_core.group_rows(w, np.arange(m)), lowbit.dequantize(raw, (m, k), qtype))
    yf = _core.group_matmul_f32(w, x)
    ref = lowbit.matmul_f32(raw, (m, k), qtype, x)
    assert np.allclose(yf, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("qtype", ["q2_0", "q1_0"])
def test_kernels_integer_extremes(qtype):
    """Every weight at its largest code times -128 / 127 activations: the int16 stage of the
    AVX2 kernel at its bound (8 steps x 2 x 3 x 128 per lane for Q2_0)."""
    m, k = 16, 512
    raw = np.zeros((m, lowbit.row_bytes(qtype, k)), np.uint8)
    b = raw.reshape(m, -1, 18)
    b[:, :, :2] = np.array([1.0], "<f2").view(np.uint8)
    b[:, :, 2:] = 0xFF  # Q2_0 code 3 (+2), Q1_0 bit 1 (+1)
    b[1::2, :, 2:] = 0  # -1 everywhere (Q2_0 code 0, Q1_0 bit 0)
    w = _core.pack_group(raw, qtype, m, k)
    q = np.full((2, k), 127, np.int8)
    q[1] = -128
    d = np.ones((2, k // 32), np.float32)
    bsum = q.reshape(2, -1, 32).astype(np.int32).sum(axis=2)
    want = lowbit.matmul_q8(raw, (m, k), qtype, q, d)
    for isa in ISAS:
        y = _core.group_matmul(w, q, d, bsum, isa)
        assert np.array_equal(y, want), isa


def test_group_errors():
    with pytest.raises(ValueError, match="q2_0, q1_0"):
        _core.pack_group(np.zeros((1, 18), np.uint8), "q3_0", 1, 64)
    with pytest.raises(ValueError, match="multiple of 128"):
        _core.pack_group(np.zeros((1, 18), np.uint8), "q1_0", 1, 64)
    with pytest.raises(ValueError, match="shape"):
        _core.pack_group(np.zeros((2, 18), np.uint8), "q2_0", 1, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        _core.quantize_q8_0(np.zeros((1, 48), np.float32))


def test_fma32_rounds_once():
    # a * b = 2^-24 (1 + 2^-23)(1 - 2^-23) just below the midpoint between c and the next
    # float: the float64 sum lands on the midpoint, and rounding it again goes the wrong way
    a = np.array([2**-24 * (1 + 2**-23)], np.float32)
    b = np.array([1 - 2**-23], np.float32)
    c = np.array([1 + 2**-23], np.float32)
    assert lowbit.fma32(a, b, c)[0] == c[0]
    assert np.float32(np.float64(a[0]) * np.float64(b[0]) + np.float64(c[0])) != c[0]
    rng = np.random.default_rng(3)
    x, y, z = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    assert np.array_equal(lowbit.fma32(x, y, z), np.float32(x.astype(np.float64) * y + z))
