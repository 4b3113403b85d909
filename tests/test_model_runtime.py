"""The native forward pass against the numpy oracle and against itself."""

import sys

import numpy as np
import pytest

import tribit
from tiny_models import kld_top1, random_weights, tiny_model, write_model
from tribit import _core
from tribit.errors import ModelError
from tribit.model import reference

KLD_MAX, TOP1_MIN = 2e-3, 0.95
N_POS = 64


def _tokens(n_vocab, n=N_POS, seed=1):
    return np.random.default_rng(seed).integers(0, n_vocab, n)


@pytest.mark.parametrize(
    "arch,n_embd,n_ff,n_head,n_head_kv,qtype",
    [
        ("bitnet-b1.58", 256, 512, 4, 1, "tq2_0"),  # GQA 4
        ("bitnet-b1.58", 256, 512, 4, 2, "tq1_0"),  # GQA 2
        ("bitnet-25", 160, 352, 5, 5, "f32"),  # odd heads, n_embd not a multiple of 128
        ("bitnet", 96, 224, 3, 3, "f32"),  # SiLU, MHA, tiny odd shapes
        ("bitnet", 256, 768, 2, 2, "i2_s"),
        ("llama", 256, 512, 8, 4, "tq2_0"),  # no sub-norms, untied head, normal RoPE
    ],
)
def test_native_matches_oracle(tmp_path, arch, n_embd, n_ff, n_head, n_head_kv, qtype):
    path = tiny_model(tmp_path / "m.gguf", arch, qtype, n_embd, n_ff, 2, n_head, n_head_kv, 300)
    model = tribit.load(path, kv_type="f32", n_threads=2)
    ref = reference.load_reference(path)
    toks = _tokens(300)
    want = reference.forward(ref, toks)
    got = model.logits(toks)
    assert got.shape == (N_POS, 300) and got.dtype == np.float32
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)


def test_a_wrong_model_fails_the_bounds(tmp_path):
    path = tiny_model(tmp_path / "m.gguf", "bitnet-b1.58", "tq2_0")
    model = tribit.load(path, kv_type="f32")
    ref = reference.load_reference(path)
    toks = _tokens(300)
    wrong = reference.forward(ref, toks, act=lambda g: np.maximum(g, 0))  # ReLU for ReLU^2
    kld, top1 = kld_top1(wrong, model.logits(toks))
    assert kld > KLD_MAX or top1 < TOP1_MIN, (kld, top1)


def test_prefill_equals_single_steps(tmp_path):
    path = tiny_model(tmp_path / "m.gguf")
    model = tribit.load(path, kv_type="f32")
    toks = _tokens(300, 40)
    full = model.logits(toks)
    model.reset()
    steps = np.concatenate([model.forward([t], logits="all") for t in toks])
    kld, top1 = kld_top1(full, steps)
    assert kld <= 1e-6 and top1 == 1.0, (kld, top1)
    np.testing.assert_allclose(steps, full, atol=1e-4)


def test_layouts_give_identical_logits(tmp_path):
    wts = random_weights(256, 512, 2, 4, 2, 300, seed=3)
    toks = _tokens(300, 24)
    outs = {}
    for qt in ("tq2_0", "tq1_0", "i2_s", "f32"):
        p = write_model(tmp_path / f"{qt}.gguf", wts, qtype=qt)
        outs[qt] = tribit.load(p, kv_type="f32").logits(toks)
    for qt, out in outs.items():
        assert np.array_equal(out, outs["tq2_0"]), qt


def test_every_isa_agrees(tmp_path):
    path = tiny_model(tmp_path / "m.gguf", n_embd=256, n_ff=768)
    toks = _tokens(300, 32)
    ref = reference.forward(reference.load_reference(path), toks)
    outs = {}
    for isa in _core.runnable_isas():
        outs[isa] = tribit.load(path, kv_type="f32", isa=isa).logits(toks)
        kld, top1 = kld_top1(ref, outs[isa])
        assert kld <= KLD_MAX and top1 >= TOP1_MIN, (isa, kld, top1)
    for isa, out in outs.items():
        # ternary sums are exact on every ISA; float parts may round differently
        np.testing.assert_allclose(out, outs["generic"], atol=2e-3, err_msg=isa)


def test_f16_kv_cache_close_to_f32(tmp_path):
    path = tiny_model(tmp_path / "m.gguf")
    toks = _tokens(300, 48)
    a = tribit.load(path, kv_type="f32").logits(toks)
    b = tribit.load(path, kv_type="f16").logits(toks)
    kld, top1 = kld_top1(a, b)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN


def test_batched_sequences_equal_separate_runs(tmp_path):
    path = tiny_model(tmp_path / "m.gguf")
    m = tribit.load(path, kv_type="f32", n_seq=3)
    a, b = list(_tokens(300, 10, 5)), list(_tokens(300, 7, 6))
    sep_a = m.logits(a)[-1]
    sep_b = m.logits(b)[-1]
    m.reset()
    # prefill both in one batch, interleaved, then one decode step for each
    toks = a[:-1] + b[:-1]
    seqs = [1] * (len(a) - 1) + [2] * (len(b) - 1)
    m.forward(toks, None, seqs)
    out = m.forward([a[-1], b[-1]], None, [1, 2])
    assert out.shape == (2, 300)
    np.testing.assert_allclose(out[0], sep_a, atol=1e-4)
    np.testing.assert_allclose(out[1], sep_b, atol=1e-4)
    assert m.n_past(1) == len(a) and m.n_past(2) == len(b) and m.n_past(0) == 0


def test_trim_and_reuse(tmp_path):
    m = tribit.load(tiny_model(tmp_path / "m.gguf"), kv_type="f32")
    toks = list(_tokens(300, 12))
    full = m.logits(toks)
    m.forward(toks[:8])
    m.forward([1, 2, 3])
    m.trim(0, 8)
    assert m.n_past(0) == 8
    out = m.forward(toks[8:], logits="all")
    np.testing.assert_allclose(out, full[8:], atol=1e-4)


def test_bad_batches_are_refused(tmp_path):
    m = tribit.load(tiny_model(tmp_path / "m.gguf", ctx=32), kv_type="f32")
    with pytest.raises(ModelError, match="out of range"):
        m.forward([300])
    with pytest.raises(ModelError, match="gap"):
        m.forward([1, 2], pos=5)
    with pytest.raises(ModelError, match="outside the context"):
        m.forward(list(range(40)), pos=0)
    with pytest.raises(ModelError, match="sequence"):
        m.forward([1], seq=3)
    assert m.n_past(0) == 0  # nothing was written by a refused batch


def test_describe(tmp_path):
    m = tribit.load(tiny_model(tmp_path / "m.gguf"))
    d = m.describe()
    assert d["arch"] == "bitnet-b1.58" and d["hparams"]["n_layer"] == 2
    assert d["weight_types"] == {"TQ2_0": 14}
    assert d["weight_bytes"] > 0 and d["kv_bytes"] > 0
    if sys.platform == "linux":  # growth of the resident set while loading
        assert isinstance(d["resident_bytes_after_load"], int)


def test_profile_counts_every_op(tmp_path):
    m = tribit.load(tiny_model(tmp_path / "m.gguf"), n_threads=2)  # 2 layers, sub-norms
    m.profile(reset=True)
    m.forward(list(range(1, 9)), logits="last")  # prefill of 8
    m.forward([9], pos=8, logits="last")  # one decode step
    prof = m.profile(reset=True)
    per_layer = {
        "matmul_qkv",
        "kv_store",
        "attention",
        "matmul_out",
        "matmul_gate_up",
        "activation",
        "matmul_down",
    }
    assert set(prof) == per_layer | {"embed", "norm", "quantize", "rope", "residual", "head"}
    for op, (seconds, calls) in prof.items():
        assert seconds >= 0.0, op
        if op in per_layer:
            assert calls == 2 * 2, op  # 2 layers x 2 forwards
    assert prof["head"][1] == 2 and prof["embed"][1] == 2
    assert prof["rope"][1] == 2 * 2 + 2  # per layer, and the angles once per forward
    assert prof["residual"][1] == 2 * 2 * 2
    assert prof["quantize"][1] == 4 * 2 * 2  # one per bitlinear: qkv, o, gate/up, down
    assert prof["norm"][1] == 4 * 2 * 2 + 2  # 2 norms + 2 sub-norms a layer, the final one
    assert all(c == 0 for _, c in m.profile().values())  # reset


def test_unknown_arch_and_bad_tensors(tmp_path):
    from tribit.formats import GGMLType, GGUFReader, GGUFWriter

    src = tiny_model(tmp_path / "m.gguf")
    r = GGUFReader(src)

    def rewrite(path, md_patch=None, drop=None, reshape=None):
        w = GGUFWriter(path)
        for k, v in r.metadata.items():
            w.add_metadata(
                k,
                (md_patch or {}).get(k, v),
                r.metadata_types[k] if not isinstance(v, (list, np.ndarray)) else None,
            )
        for name, ti in r.tensors.items():
            if name == drop:
                continue
            shape = ti.shape
            data = r.raw(name)
            if name == reshape:
                shape, data = (ti.shape[0] // 2, ti.shape[1]), data[: data.size // 2]
            w.add_tensor(name, shape, ti.ggml_type, data)
        w.write()
        return path

    with pytest.raises(ModelError, match="unsupported architecture 'gpt9'"):
        tribit.load(rewrite(tmp_path / "a.gguf", {"general.architecture": "gpt9"}))
    with pytest.raises(ModelError, match="missing tensor 'blk.1.ffn_up.weight'"):
        tribit.load(rewrite(tmp_path / "b.gguf", drop="blk.1.ffn_up.weight"))
    with pytest.raises(ModelError, match="blk.0.attn_q.weight.*shape"):
        tribit.load(rewrite(tmp_path / "c.gguf", reshape="blk.0.attn_q.weight"))
    with pytest.raises(ModelError, match="head_count_kv"):
        tribit.load(rewrite(tmp_path / "d.gguf", {"bitnet-b1.58.attention.head_count_kv": 3}))
    assert GGMLType.TQ2_0 == 35
