"""The numpy spec (tribit.quant) against independent references: gguf-py and torch."""

import numpy as np
import pytest

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

gguf = pytest.importorskip("gguf")
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
