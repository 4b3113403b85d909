"""The numpy spec (tribit.quant) against independent references (gguf-py, torch) and
element-by-element re-readings of docs/FORMATS.md: hostile inputs, torch's summation
order, gguf-py on edge cases."""

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tribit.quant import (
    absmean_ternarize,
    as_ternary,
    bf16_to_f32,
    dequantize_q8_0,
    f32_to_bf16,
    pack_hf,
    pack_i2s,
    pack_tq1_0,
    pack_tq2_0,
    quantize_activations,
    quantize_q8_0,
    ternary_matmul_ref,
    unpack_hf,
    unpack_i2s,
    unpack_tq1_0,
    unpack_tq2_0,
)
from tribit.quant.torch_sum import torch_mean_f32, torch_sum_f32, torch_sum_lanes

SHAPES = [(1, 256), (3, 512), (17, 768), (64, 1024)]


def _ternary(rng, shape, p_zero=1 / 3):
    t = rng.choice(np.array([-1, 1], np.int8), size=shape)
    t[rng.random(shape) < p_zero] = 0
    return t


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_tq_pack_is_byte_identical_to_gguf_py(shape, kind):
    rng = np.random.default_rng(sum(shape))
    t = _ternary(rng, shape)
    t[0, :256] = 0  # an all-zero block: d = 0
    gamma = np.float32(0.0371)
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    ref = gguf.quants.quantize((gamma * t).astype(np.float32), qtype)
    pack, unpack = (pack_tq1_0, unpack_tq1_0) if kind == "TQ1_0" else (pack_tq2_0, unpack_tq2_0)
    ours = pack(t, gamma)
    assert ours.shape == ref.shape and np.array_equal(ours, ref)
    t2, d = unpack(ours, shape)
    assert np.array_equal(t2, t)
    assert np.all(d[0, 0] == 0) and np.all(d[d != 0] == np.float32(np.float16(gamma)))
    deq = gguf.quants.dequantize(ours, qtype).reshape(shape)
    assert np.array_equal(deq, np.repeat(d, 256, axis=1) * t)


def test_tq_rejects_bad_k():
    with pytest.raises(ValueError, match="multiple of 256"):
        pack_tq2_0(np.zeros((2, 100), np.int8), 1.0)


def test_i2s_worked_example_and_round_trip():
    t = np.zeros((1, 128), np.int8)
    t[0, 0], t[0, 32], t[0, 64], t[0, 96] = -1, 1, 0, 1
    raw = pack_i2s(t, 0.5)
    assert raw[0] == 0x26
    assert raw.size == 128 // 4 + 32
    assert raw[32:36].view("<f4")[0] == np.float32(0.5) and not raw[36:].any()
    rng = np.random.default_rng(1)
    for shape in [(3, 128), (5, 384), (7, 2560)]:
        t = _ternary(rng, shape)
        t2, g = unpack_i2s(pack_i2s(t, 1.25), shape)
        assert np.array_equal(t2, t) and g == np.float32(1.25)


def test_hf_packing_worked_example():
    t = np.array([-1, 0, 1, -1, 1, 0, 0, 1], np.int8).reshape(8, 1)
    packed = pack_hf(t)
    assert packed.reshape(-1).tolist() == [0x68, 0x91]
    assert np.array_equal(unpack_hf(packed, 8), t)


@pytest.mark.parametrize("m", [1, 5, 8, 13])
def test_hf_round_trip_and_invalid_code(m):
    rng = np.random.default_rng(m)
    t = _ternary(rng, (m, 7))
    packed = pack_hf(t)
    assert packed.shape == (-(-m // 4), 7)
    assert np.array_equal(unpack_hf(packed, m), t)
    bad = packed.copy()
    bad[0, 0] |= 3
    with pytest.raises(ValueError, match="code 3"):
        unpack_hf(bad, m)


def test_hf_packing_matches_transformers():
    torch = pytest.importorskip("torch")
    try:
        from transformers.integrations.bitnet import pack_weights, unpack_weights
    except Exception as e:  # pragma: no cover - depends on the installed version
        pytest.skip(f"transformers bitnet packing unavailable: {e}")
    rng = np.random.default_rng(3)
    t = _ternary(rng, (16, 12))
    ref = pack_weights(torch.from_numpy(t.astype(np.float32))).numpy()
    assert np.array_equal(pack_hf(t), ref)
    back = unpack_weights(torch.from_numpy(ref), dtype=torch.float32).numpy()
    assert np.array_equal(back.astype(np.int8), t)


def test_absmean_matches_torch_bit_exactly():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    for shape in [(7, 33), (64, 256), (300, 160)]:
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        tw = torch.from_numpy(w)
        s = 1.0 / tw.abs().mean().clamp_(min=1e-5)
        ref = (tw * s).round().clamp_(-1, 1)
        t, gamma = absmean_ternarize(w)
        assert np.array_equal(t, ref.numpy().astype(np.int8))
        # torch's f32 mean is not always correctly rounded: the scales agree to 1 ulp
        mean = np.float32(tw.abs().mean().item())
        assert abs(gamma - mean) <= np.spacing(mean)


def test_activation_quant_matches_torch_bit_exactly():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((9, 300)) * 3).astype(np.float32)
    x[1] = 0  # all zero: floor 1e-5
    x[2, 7] = 1e6  # one huge value
    x[3] = np.float32(1e-30)  # tiny
    tx = torch.from_numpy(x)
    scale = 127.0 / tx.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)
    ref = (tx * scale).round().clamp_(-128, 127)
    q, sc, sq = quantize_activations(x)
    assert np.array_equal(q, ref.numpy().astype(np.int8))
    # torch evaluates 127 / t as reciprocal(t) * 127; we divide once, as bitnet.cpp does:
    # the scales agree to 1 ulp
    assert np.all(np.abs(sc - scale.numpy()[:, 0]) <= np.spacing(sc))
    assert np.array_equal(sq, q.sum(axis=1))
    assert q[1].max() == 0 and q[2, 7] == 127


def test_round_half_to_even():
    # amax 127 -> scale 1: x = 0.5, 1.5, 2.5, -0.5 round to 0, 2, 2, 0
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]], np.float32)
    q, _, _ = quantize_activations(x)
    assert q[0].tolist() == [127, 0, 2, 2, 0, -2]


def test_ternary_matmul_ref_epilogue():
    rng = np.random.default_rng(6)
    t = _ternary(rng, (5, 64))
    x = rng.standard_normal((3, 64)).astype(np.float32)
    q, scale, _ = quantize_activations(x)
    y = ternary_matmul_ref(t, 0.75, q, scale)
    s = q.astype(np.int64) @ t.astype(np.int64).T
    assert np.array_equal(y, s.astype(np.float32) * (np.float32(0.75) / scale)[:, None])
    # close to the float product
    np.testing.assert_allclose(y, x @ (0.75 * t.T), rtol=0.05, atol=0.1)


def test_as_ternary():
    t = np.array([[-1, 0, 1], [1, 1, 0]], np.int8)
    g = np.float32(0.0123)
    got = as_ternary((t * g).astype(np.float32))
    assert got is not None and np.array_equal(got[0], t) and got[1] == g
    assert as_ternary(np.array([0.1, -0.2, 0.0], np.float32)) is None
    got16 = as_ternary((t * g).astype(np.float16))
    assert got16 is not None and np.array_equal(got16[0], t)


def test_absmean_zero_tensor_uses_floor():
    t, gamma = absmean_ternarize(np.zeros((2, 4), np.float32))
    assert gamma == np.float32(1e-5) and not t.any()


def test_bf16_round_trip_and_rounding():
    x = np.array([1.0, -2.5, 3.14159, 1e-20, 65504.0], np.float32)
    b = f32_to_bf16(x)
    back = bf16_to_f32(b)
    np.testing.assert_allclose(back, x, rtol=2**-8)
    assert np.array_equal(f32_to_bf16(back), b)
    # ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1
    assert bf16_to_f32(f32_to_bf16(np.array([1 + 2**-8], np.float32)))[0] == 1.0


def test_q8_0_matches_gguf_py():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    x[0, :32] = 0
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    ours = quantize_q8_0(x)
    assert np.array_equal(ours, ref)
    np.testing.assert_array_equal(
        dequantize_q8_0(ours, x.shape),
        gguf.quants.dequantize(ref, gguf.GGMLQuantizationType.Q8_0).reshape(x.shape),
    )


@pytest.fixture
def torch_threads():
    """torch with a settable thread count, restored afterwards."""
    torch = pytest.importorskip("torch")
    if torch_sum_lanes() != 8:  # x86-64, any capability: AVX512 runs torch's AVX2 sum
        pytest.skip("torch's summation order is measured on x86-64 only")
    saved = torch.get_num_threads()
    yield torch
    torch.set_num_threads(saved)


# --- element-by-element re-readings of docs/FORMATS.md (independent of the vectorised code) ---


def _i2s_by_text(t: np.ndarray, scale: float) -> bytes:
    """§3.4 literally: 128-value blocks of the flat tensor, byte p holds p, 32+p, 64+p, 96+p."""
    flat = t.reshape(-1)
    out = bytearray()
    for b in range(0, flat.size, 128):
        for p in range(32):
            byte = 0
            for g, shift in enumerate((6, 4, 2, 0)):
                byte |= (int(flat[b + 32 * g + p]) + 1) << shift
            out.append(byte)
    return bytes(out) + np.float32(scale).astype("<f4").tobytes() + bytes(28)


def _hf_by_text(t: np.ndarray) -> np.ndarray:
    """§2.1 literally: R = ceil(M/4); packed[r, k] bits 2i..2i+1 hold row i*R + r."""
    m, k = t.shape
    r_rows = -(-m // 4)
    out = np.zeros((r_rows, k), np.uint8)
    for r in range(r_rows):
        for col in range(k):
            for i in range(4):
                row = i * r_rows + r
                code = int(t[row, col]) + 1 if row < m else 1
                out[r, col] |= code << (2 * i)
    return out


def _tq2_by_text(t: np.ndarray, gamma: float) -> bytes:
    """§3.7 TQ2_0 literally: qs[32c+m] = t[128c+m] | t[128c+32+m] << 2 | ... (low bits first)."""
    out = bytearray()
    for row in t:
        for b in range(0, row.size, 256):
            blk = row[b : b + 256].astype(int) + 1
            for c in range(2):
                for m in range(32):
                    out.append(sum(int(blk[128 * c + 32 * g + m]) << (2 * g) for g in range(4)))
            d = np.float16(gamma if np.any(row[b : b + 256]) else 0)
            out += d.astype("<f2").tobytes()
    return bytes(out)


def test_i2s_matches_the_text():
    rng = np.random.default_rng(10)
    for shape in [(1, 128), (3, 256), (2, 640)]:
        t = _ternary(rng, shape)
        assert pack_i2s(t, 0.3).tobytes() == _i2s_by_text(t, 0.3)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9, 12, 13])
def test_hf_matches_the_text(m):
    t = _ternary(np.random.default_rng(m), (m, 5))
    assert np.array_equal(pack_hf(t), _hf_by_text(t))


def test_tq2_0_matches_the_text():
    t = _ternary(np.random.default_rng(11), (2, 512))
    t[1, 256:] = 0
    assert pack_tq2_0(t, 0.0625).tobytes() == _tq2_by_text(t, 0.0625)


def test_tq1_0_trit_decoding_rule():
    """§3.7: trit k of byte b is ((uint8)(b * 3^k) * 3) >> 8; ceil(n*256/243) round-trips."""
    for n in range(243):
        b = -(-n * 256 // 243)
        trits = [(((b * 3**k) & 0xFF) * 3) >> 8 for k in range(5)]
        assert sum(tr * 3 ** (4 - k) for k, tr in enumerate(trits)) == n


def test_hf_against_transformers_pack_weights_for_every_m():
    """Byte-identical when m % 4 == 0 (all real shapes); otherwise only the padding
    codes differ (transformers leaves them 0, pack_hf writes 1 = zero) and
    unpack_hf still reads transformers' bytes."""
    torch = pytest.importorskip("torch")
    try:
        from transformers.integrations.bitnet import pack_weights
    except Exception as e:  # pragma: no cover - depends on the installed version
        pytest.skip(f"transformers bitnet packing unavailable: {e}")
    rng = np.random.default_rng(20)
    for m in range(1, 14):
        t = _ternary(rng, (m, 6))
        ref = pack_weights(torch.from_numpy(t.astype(np.float32))).numpy()
        assert np.array_equal(unpack_hf(ref, m), t), m
        ours = pack_hf(t)
        if m % 4 == 0:
            assert np.array_equal(ours, ref), m
        else:
            r_rows = ours.shape[0]
            pad = np.zeros_like(ours)  # bits of plane i at packed row r hold row i*R + r
            for i in range(4):
                for r in range(r_rows):
                    if i * r_rows + r >= m:
                        pad[r] |= 3 << (2 * i)
            assert np.array_equal(ours & ~pad, ref & ~pad), m


# --- round trips (hypothesis) ---


@st.composite
def _ternary_matrices(draw, k_unit: int, max_m: int = 6, max_units: int = 3):
    m = draw(st.integers(1, max_m))
    k = k_unit * draw(st.integers(1, max_units))
    seed = draw(st.integers(0, 2**32 - 1))
    return _ternary(np.random.default_rng(seed), (m, k), p_zero=draw(st.floats(0, 1)))


@settings(max_examples=25, deadline=None)
@given(_ternary_matrices(256), st.floats(2.0**-14, 2.0**14, width=32))
def test_tq_round_trips(t, gamma):
    for pack, unpack in ((pack_tq1_0, unpack_tq1_0), (pack_tq2_0, unpack_tq2_0)):
        t2, d = unpack(pack(t, gamma), t.shape)
        assert np.array_equal(t2, t)
        nz = np.any(t.reshape(t.shape[0], -1, 256) != 0, axis=2)
        assert np.array_equal(d, np.where(nz, np.float32(np.float16(gamma)), 0))


@settings(max_examples=25, deadline=None)
@given(_ternary_matrices(128), st.floats(2.0**-20, 2.0**20, width=32))
def test_i2s_round_trips(t, gamma):
    t2, g = unpack_i2s(pack_i2s(t, gamma), t.shape)
    assert np.array_equal(t2, t) and g == np.float32(gamma)


@settings(max_examples=25, deadline=None)
@given(_ternary_matrices(1, max_m=17, max_units=5))
def test_hf_round_trips(t):
    assert np.array_equal(unpack_hf(pack_hf(t), t.shape[0]), t)


# --- gguf-py on edge cases ---


@pytest.mark.parametrize("gamma", [1e-6, 0.1, 1.0, 3.0e4])
@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_tq_byte_identical_for_awkward_scales(kind, gamma):
    """f16-subnormal, f16-inexact and large scales; plus an all-zero row (d = 0)."""
    t = _ternary(np.random.default_rng(12), (3, 512))
    t[2] = 0
    gamma = np.float32(gamma)
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    pack = pack_tq1_0 if kind == "TQ1_0" else pack_tq2_0
    assert np.array_equal(pack(t, gamma), gguf.quants.quantize(gamma * t, qtype))


@pytest.mark.parametrize("kind", ["TQ1_0", "TQ2_0"])
def test_tq_unpack_matches_gguf_dequantize_on_arbitrary_bytes(kind):
    """Any byte is a valid TQ1_0 group of trits; TQ2_0 avoids the never-written code 3."""
    rng = np.random.default_rng(13)
    qtype = getattr(gguf.GGMLQuantizationType, kind)
    nbytes, d_at = (54, 52) if kind == "TQ1_0" else (66, 64)
    raw = rng.integers(0, 256, size=(4, 2, nbytes), dtype=np.uint8)
    if kind == "TQ2_0":  # random 2-bit codes in {0, 1, 2}
        codes = rng.integers(0, 3, size=(4, 2, 64, 4), dtype=np.uint8)
        raw[:, :, :64] = (codes << np.array([0, 2, 4, 6], np.uint8)).sum(axis=-1, dtype=np.uint8)
    raw[:, :, d_at:] = rng.uniform(0.01, 2, (4, 2, 1)).astype("<f2").view(np.uint8)
    raw = raw.reshape(4, -1)
    unpack = unpack_tq1_0 if kind == "TQ1_0" else unpack_tq2_0
    t, d = unpack(raw, (4, 512))
    ref = gguf.quants.dequantize(raw, qtype).reshape(4, 512)
    assert np.array_equal(np.repeat(d, 256, axis=1) * t, ref)


def test_q8_0_dequantize_matches_gguf_on_arbitrary_bytes():
    rng = np.random.default_rng(14)
    raw = rng.integers(0, 256, size=(3, 4, 34), dtype=np.uint8)
    raw[:, :, :2] = rng.uniform(-2, 2, (3, 4, 1)).astype("<f2").view(np.uint8)
    raw = raw.reshape(3, -1)
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0).reshape(3, 128)
    assert np.array_equal(dequantize_q8_0(raw, (3, 128)), ref)


def test_q8_0_ties_round_away_from_zero_like_gguf():
    # block max 127 -> d = 1, id = 1: x * id hits exact .5 ties
    x = np.zeros((1, 64), np.float32)
    x[:, 0] = 127
    x[:, 1:9] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5]
    x[:, 32] = -63.5  # second block: d = 0.5, id = 2: ties at odd multiples of 0.25
    x[:, 33:36] = [0.25, -0.75, 1.25]
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(quantize_q8_0(x), ref)


# --- bf16 against torch ---


def test_bf16_to_f32_exhaustive_against_torch():
    torch = pytest.importorskip("torch")
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ref = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    ours = bf16_to_f32(bits)
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))


def test_f32_to_bf16_against_torch_on_random_bit_patterns():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    u = rng.integers(0, 2**32, size=400_000, dtype=np.uint64).astype(np.uint32)
    # plus every boundary: ties, just above/below ties, max finite, inf, subnormals
    edges = np.array(
        [
            0x3F808000,
            0x3F818000,
            0x3F808001,
            0x3F807FFF,
            0x7F7FFFFF,
            0x7F7F8000,
            0x7F800000,
            0xFF800000,
            0x00008000,
            0x00018000,
            0x80000001,
            0x00000000,
            0x80000000,
        ],
        np.uint32,
    )
    x = np.concatenate([u, edges]).view(np.float32)
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    ours = f32_to_bf16(x)
    nan = np.isnan(x)
    assert np.array_equal(ours[~nan], ref[~nan])
    assert np.all(np.isnan(bf16_to_f32(ours[nan])))  # NaN stays NaN (payload may differ)


# --- activation quantization: hostile inputs ---


def test_activation_quant_hostile_rows_against_torch():
    """bitnet.cpp's scale 127 / amax (one f32 division) then torch round/clamp."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    x = rng.standard_normal((10, 64)).astype(np.float32)
    x[0] = 0  # all zero -> floor
    x[1] = np.float32(1e-40) * np.arange(64)  # subnormals -> floor, all q = 0
    x[2, 5] = np.float32(3e38)  # near f32 max: the rest vanish
    x[3] = -x[3]
    x[3, 9] = -np.abs(x[3]).max() * 2  # negative amax -> -127
    x[4] = np.float32(1e-5)  # exactly at the floor
    x[5] = np.float32(9.9e-6) * rng.choice([-1, 1], 64)  # just under the floor
    x[6] = np.linspace(-127, 127, 64, dtype=np.float32)
    x[6, :8] = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]  # scale 1: exact ties
    tx = torch.from_numpy(x)
    amax = tx.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    scale = torch.div(torch.full_like(amax, 127.0), amax)
    ref = (tx * scale).round().clamp(-128, 127).to(torch.int8).numpy()
    q, sc, sq = quantize_activations(x)
    assert np.array_equal(q, ref) and np.array_equal(sc, scale.numpy()[:, 0])
    assert sq.dtype == np.int32 and np.array_equal(sq, q.astype(np.int64).sum(axis=1))
    assert not q[:2].any() and q[2, 5] == 127 and q[3, 9] == -127
    assert q[6, :8].tolist() == [127, 0, 2, 2, 0, -2, -2, 126]
    assert q.min() >= -127  # |x * scale| <= 127 (+ 1 ulp): -128 never appears


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(-30, 30))
def test_activation_scale_is_one_correctly_rounded_division(seed, log_mag):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 40)) * np.exp(log_mag)).astype(np.float32)
    q, sc, _ = quantize_activations(x)
    amax = np.maximum(np.abs(x).max(axis=1), np.float32(1e-5))
    # f32 / f32 rounded once == the f64 quotient rounded to f32 (53 >= 2*24 + 2)
    assert np.array_equal(sc, (127.0 / amax.astype(np.float64)).astype(np.float32))
    assert np.all(np.abs(q) <= 127)


def test_activation_quant_empty_and_bad_shapes():
    q, sc, sq = quantize_activations(np.zeros((2, 0), np.float32))
    assert q.shape == (2, 0) and np.all(sc == np.float32(127) / np.float32(1e-5)) and not sq.any()
    with pytest.raises(ValueError, match="2-D"):
        quantize_activations(np.zeros(5, np.float32))


# --- the epilogue ---


def test_ternary_matmul_ref_extremes_are_exact():
    """|S| up to 127 * 65536 < 2**24: the int sum and its float conversion are exact."""
    k = 65536
    t = np.ones((3, k), np.int8)
    t[1] = -1
    t[2, ::2] = 0
    q = np.full((2, k), 127, np.int8)
    q[1] = -127
    scale = np.array([0.5, 3.0], np.float32)
    y = ternary_matmul_ref(t, np.float32(0.25), q, scale)
    s = np.array([[127 * k, -127 * k, 127 * k // 2], [-127 * k, 127 * k, -127 * k // 2]])
    post = np.array([np.float32(0.25) / np.float32(0.5), np.float32(0.25) / np.float32(3.0)])
    assert y.dtype == np.float32 and y.shape == (2, 3)
    assert np.array_equal(y, (s.astype(np.float32) * post[:, None].astype(np.float32)))


# --- absmean in torch's summation order ---


def test_torch_sum_order_is_bit_exact(torch_threads):
    torch = torch_threads
    rng = np.random.default_rng(17)
    sizes = [*range(1, 40), 255, 256, 257, 4097, 32767, 32768, 40001, 98305, 200000]
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        for n in sizes:
            w = (rng.standard_normal(n) * rng.uniform(1e-3, 1)).astype(np.float32)
            tw = torch.from_numpy(w)
            assert torch_sum_f32(w, n_threads=n_threads) == np.float32(tw.sum().item()), n
            got = torch_mean_f32(np.abs(w), n_threads=n_threads)
            assert got == np.float32(tw.abs().mean().item()), n


def test_torch_order_absmean_reproduces_torch_weight_quant(torch_threads):
    """The converters' WeightQuant with the torch-order mean: gamma and t bit-exact."""
    torch = torch_threads
    torch.set_num_threads(1)
    rng = np.random.default_rng(18)
    for shape in [(7, 33), (64, 256), (300, 160), (96, 640)]:
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        tw = torch.from_numpy(w)
        mean = tw.abs().mean().clamp_(min=1e-5)
        ref_t = (tw * (1.0 / mean)).round().clamp_(-1, 1).numpy().astype(np.int8)
        gamma = np.float32(max(torch_mean_f32(np.abs(w)), np.float32(1e-5)))
        t = np.clip(np.rint(w * (np.float32(1) / gamma)), -1, 1).astype(np.int8)
        assert gamma == np.float32(mean.item()) and np.array_equal(t, ref_t)


def test_absmean_ternarize_can_reproduce_torch_bit_exactly(torch_threads):
    torch = torch_threads
    rng = np.random.default_rng(19)
    shapes = [(1, 5), (7, 33), (64, 256), (300, 160), (33, 1000), (96, 640), (160, 1280)]
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        for shape in shapes:
            w = (rng.standard_normal(shape) * rng.uniform(1e-3, 1)).astype(np.float32)
            tw = torch.from_numpy(w)
            mean = tw.abs().mean().clamp_(min=1e-5)
            ref_t = (tw * (1.0 / mean)).round().clamp_(-1, 1).numpy().astype(np.int8)
            t, gamma = absmean_ternarize(w, torch_threads=n_threads)
            assert gamma == np.float32(mean.item()) and np.array_equal(t, ref_t), shape


def test_torch_sum_lanes_by_machine():
    assert torch_sum_lanes("x86_64") == torch_sum_lanes("AMD64") == 8
    assert torch_sum_lanes("aarch64") is None and torch_sum_lanes("arm64") is None


def test_torch_sum_rejects_bad_arguments():
    with pytest.raises(ValueError):
        torch_sum_f32(np.ones(4, np.float32), lanes=0)
    with pytest.raises(ValueError, match="empty"):
        torch_mean_f32(np.zeros(0, np.float32))


# --- as_ternary on hostile input ---


def test_as_ternary_hostile():
    assert as_ternary(np.array([np.nan, 0.0], np.float32)) is None
    assert as_ternary(np.array([1, -1, 0], np.int8)) is None  # not float: not a folded weight
    assert as_ternary(np.array([0.5, -0.5, 0.25], np.float32)) is None
    got = as_ternary(np.array([[0.0, -0.0]], np.float32))
    assert got is not None and not got[0].any()


def test_as_ternary_rejects_infinite_scale():
    assert as_ternary(np.array([np.inf, 0.0, -np.inf], np.float32)) is None


# --- bad shapes give clear errors ---


def test_packers_reject_bad_shapes():
    with pytest.raises(ValueError, match="multiple of 256"):
        pack_tq1_0(np.zeros((2, 384), np.int8), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        pack_tq2_0(np.zeros(256, np.int8), 1.0)
    with pytest.raises(ValueError, match="k % 128"):
        pack_i2s(np.zeros((4, 64), np.int8), 1.0)
    with pytest.raises(ValueError, match="expected"):
        unpack_i2s(np.zeros(10, np.uint8), (1, 128))
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_hf(np.zeros((1, 3), np.uint8), 5)


def test_decoders_map_unused_code_3_to_zero():
    """I2_S and TQ2_0 decoders read the never-written code 3 as 0 (docs/FORMATS.md 2.1/3.4)."""
    raw = pack_i2s(np.zeros((1, 128), np.int8), 1.0)
    raw[0] = 0xFF  # values 0, 32, 64, 96 get code 3
    t, _ = unpack_i2s(raw, (1, 128))
    assert not t.any()
    raw = pack_tq2_0(np.ones((1, 256), np.int8), 1.0)
    raw[0, 0] = 0xFF
    t, _ = unpack_tq2_0(raw, (1, 256))
    assert t[0, [0, 32, 64, 96]].tolist() == [0, 0, 0, 0] and t[0, 1] == 1
