"""llama.cpp's float ops (csrc/kernels.h, ggml_ops.h): what a Q2_0 / Q1_0 model's forward
uses in group_mode "llama" for attention and SwiGLU. Every ISA gives the same bits, and those
are the bits of mainline ggml's own compiled vector functions (llama-cpp-python 0.3.36,
through ctypes: tests/ggml_lib.py) when that build is AVX-512, the code path the kernels
follow (docs/FORMATS.md 3.11)."""

from __future__ import annotations

import numpy as np
import pytest

from ggml_lib import load as load_ggml
from tribit import _core

ISAS = _core.runnable_isas()
# head dims / KV lengths: multiples of 64, and tails of every kind (16s, an 8, FMA singles)
LENGTHS = [1, 7, 8, 15, 16, 17, 24, 31, 40, 63, 64, 96, 100, 128, 200, 256, 1000]


@pytest.fixture(scope="module")
def ggml():
    g = load_ggml()
    if g is None:
        pytest.skip("llama-cpp-python (mainline ggml) is not installed")
    if not g.avx512:
        pytest.skip("mainline ggml here is not an AVX-512 build, whose order the kernels follow")
    return g


def _vectors(rng, n, scale=1.0):
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    x[rng.random(n) < 0.05] = 0.0
    return x


def _same(a, b) -> bool:
    """Bit for bit (a NaN's payload aside)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    bits = a.view(np.uint32) == b.view(np.uint32)
    return bool((bits | (np.isnan(a) & np.isnan(b))).all())


@pytest.mark.parametrize("isa", ISAS)
def test_dot_is_ggml_vec_dot_f32(ggml, isa):
    rng = np.random.default_rng(1)
    for n in LENGTHS:
        a = np.stack([_vectors(rng, n, 3.0) for _ in range(3)])
        b = _vectors(rng, n, 0.5)
        got = _core.ggml_dot_rows(a, b, isa=isa)
        want = [ggml.vec_dot_f32(row, b) for row in a]
        assert _same(got, want), n


@pytest.mark.parametrize("isa", ISAS)
def test_weighted_sum_is_ggml_order(ggml, isa):
    """lanes 64 is ggml_vec_dot_f32 over the cache rows (one token). lanes 16 (llamafile's
    tinyBLAS, a batch; not exported) is checked against its definition: 16 FMA lanes over t,
    summed by halves, in numpy with every FMA exact (float64 products of floats are exact;
    the sums are taken as float32 of the exact value, checked by the 64-lane case)."""
    rng = np.random.default_rng(2)
    for length in (1, 5, 16, 33, 64, 100, 256):
        coef = np.abs(np.stack([_vectors(rng, length) for _ in range(2)]))
        x = np.stack([_vectors(rng, 40, 2.0) for _ in range(length)])
        got = _core.ggml_wsum_rows(coef, x, 64, isa=isa)
        # llama.cpp's KV rows: a multiple of 256 cells, the masked ones with weight 0
        n_kv = (length + 255) // 256 * 256
        xp = np.zeros((n_kv, x.shape[1]), np.float32)
        xp[:length] = x
        cp = np.zeros((coef.shape[0], n_kv), np.float32)
        cp[:, :length] = coef
        want = [[ggml.vec_dot_f32(xp[:, i], c) for i in range(x.shape[1])] for c in cp]
        assert _same(got, want), length
        got16 = _core.ggml_wsum_rows(coef, x, 16, isa=isa)
        assert _same(got16, _tinyblas(coef, x)), length


def _fma32(a, b, c):
    """float32 fma(a, b, c) rounded once (a * b is exact in float64)."""
    from fractions import Fraction

    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    r = np.float32(float(exact))  # float64 first: may round twice at a float32 midpoint
    lo, hi = (
        (np.nextafter(r, np.float32(-np.inf)), r)
        if Fraction(float(r)) > exact
        else (
            r,
            np.nextafter(r, np.float32(np.inf)),
        )
    )
    dlo, dhi = exact - Fraction(float(lo)), Fraction(float(hi)) - exact
    if dlo != dhi:
        return lo if dlo < dhi else hi
    return lo if int(lo.view(np.uint32)) % 2 == 0 else hi


def _sum16(v):
    v = list(v)
    for w in (8, 4):
        v = [np.float32(v[i + w] + v[i]) for i in range(w)]
    return np.float32(np.float32(v[0] + v[2]) + np.float32(v[1] + v[3]))


def _tinyblas(coef, x):
    out = np.zeros((coef.shape[0], x.shape[1]), np.float32)
    for g in range(coef.shape[0]):
        for i in range(x.shape[1]):
            lanes = [np.float32(0)] * 16
            for t in range(x.shape[0]):
                lanes[t % 16] = _fma32(x[t, i], coef[g, t], lanes[t % 16])
            out[g, i] = _sum16(lanes)
    return out


@pytest.mark.parametrize("isa", ISAS)
def test_soft_max_is_ggml_vec_soft_max_f32(ggml, isa):
    rng = np.random.default_rng(3)
    for n in LENGTHS:
        x = _vectors(rng, n, 4.0)
        mx = float(x.max())
        # ggml's row is padded to a multiple of 16 cells with masked ones (exp(-inf) = 0)
        padded = np.full((n + 15) // 16 * 16, -np.inf, np.float32)
        padded[:n] = x
        want_y, want_sum = ggml.vec_soft_max_f32(padded, mx)
        got_y, got_sum = _core.ggml_soft_max(x, mx, isa=isa)
        assert _same(got_y, want_y[:n]) and got_sum == want_sum, n
    # the exp's edges: far below the max (0), the range limits, NaN
    x = np.array(
        [0, -1e-8, -87.3, -88.8, -103.9, -104, -200, -np.inf, 80, 88.5, np.nan] + [0] * 5,
        np.float32,
    )
    want_y, want_sum = ggml.vec_soft_max_f32(x, 0.0)
    got_y, got_sum = _core.ggml_soft_max(x, 0.0, isa=isa)
    assert _same(got_y, want_y)
    assert np.isnan(got_sum) and np.isnan(want_sum)


@pytest.mark.parametrize("isa", ISAS)
def test_swiglu_is_ggml_vec_swiglu_f32(ggml, isa):
    rng = np.random.default_rng(4)
    for n in LENGTHS + [512, 6144]:
        x, g = _vectors(rng, n, 4.0), _vectors(rng, n, 2.0)
        assert _same(_core.ggml_swiglu(x, g, isa=isa), ggml.vec_swiglu_f32(x, g)), n
    x = np.array(
        [0, -0.0, 1e-30, -1e-30, 20, -20, 88, -88, 89, -89, 104, -104, 200, -200, np.inf, -np.inf],
        np.float32,
    )
    g = np.ones_like(x)
    assert _same(_core.ggml_swiglu(x, g, isa=isa), ggml.vec_swiglu_f32(x, g))


def test_every_isa_gives_the_same_bits():
    """Without mainline ggml too: the one portable source, compiled per ISA, one result."""
    rng = np.random.default_rng(5)
    a = np.stack([_vectors(rng, 200, 3.0) for _ in range(4)])
    b = _vectors(rng, 200)
    coef = np.abs(np.stack([_vectors(rng, 77) for _ in range(3)]))
    x = np.stack([_vectors(rng, 72) for _ in range(77)])
    s = _vectors(rng, 300, 5.0)
    first = None
    for isa in ISAS:
        got = (
            _core.ggml_dot_rows(a, b, isa=isa),
            _core.ggml_wsum_rows(coef, x, 16, isa=isa),
            _core.ggml_wsum_rows(coef, x, 64, isa=isa),
            *_core.ggml_soft_max(s, float(s.max()), isa=isa),
            _core.ggml_swiglu(s, s[::-1].copy(), isa=isa),
        )
        if first is None:
            first = got
        for u, v in zip(got, first, strict=True):
            assert np.array_equal(np.asarray(u), np.asarray(v)), isa
