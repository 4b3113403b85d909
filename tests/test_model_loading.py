"""Loading every storage layout: exact ternary from float files, absmean masters,
per-projection `.scale` tensors, head/embedding types, tied/untied heads, and
bounded memory while repacking."""

import tracemalloc

import numpy as np
import pytest

import tribit
from tiny_models import kld_top1, random_weights, tiny_model, write_model
from tribit.errors import ModelError
from tribit.formats import GGMLType, GGUFReader, GGUFWriter
from tribit.model import reference
from tribit.model.weights import read_ternary
from tribit.quant import absmean_ternarize, f32_to_bf16, pack_tq2_0, unpack_tq2_0

KLD_MAX, TOP1_MIN = 2e-3, 0.95
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _tokens(n=32, seed=2):
    return np.random.default_rng(seed).integers(0, 300, n)


def _is_proj(name: str) -> bool:
    return any(name.endswith(p + ".weight") for p in PROJ)


def rewrite(src, dst, md_patch=None, drop=(), replace=None, add=None):
    """Copy a GGUF file, patching metadata (value None deletes), dropping tensors,
    and replacing/adding tensors given as name -> (shape, ggml_type, data)."""
    r = GGUFReader(src)
    md_patch, replace, add = md_patch or {}, replace or {}, add or {}
    w = GGUFWriter(dst)
    for k, v in r.metadata.items():
        if k in md_patch and md_patch[k] is None:
            continue
        if k in md_patch:
            w.add_metadata(k, md_patch[k])
        else:
            arr = isinstance(v, (list, np.ndarray))
            w.add_metadata(k, v, None if arr else r.metadata_types[k])
    for k, v in md_patch.items():
        if k not in r.metadata and v is not None:
            w.add_metadata(k, v)
    for name, ti in r.tensors.items():
        if name in drop:
            continue
        if name in replace:
            w.add_tensor(name, *replace[name])
        else:
            w.add_tensor(name, ti.shape, ti.ggml_type, r.raw(name))
    for name, spec in add.items():
        w.add_tensor(name, *spec)
    w.write()
    r.close()
    return dst


def _folded(src, kind: str) -> dict:
    """Every TQ2_0 projection of `src` as gamma*T in a float type (mainline's F16/F32 files)."""
    r = GGUFReader(src)
    out = {}
    for name, ti in r.tensors.items():
        if not _is_proj(name):
            continue
        t, _ = unpack_tq2_0(r.raw(name), ti.shape)
        g = np.float32(r.metadata["tribit.scale." + name])
        w = g * t.astype(np.float32)
        if kind == "f16":
            out[name] = (ti.shape, GGMLType.F16, w.astype(np.float16))
        elif kind == "bf16":
            out[name] = (ti.shape, GGMLType.BF16, f32_to_bf16(w))
        else:
            out[name] = (ti.shape, GGMLType.F32, w)
    r.close()
    return out


@pytest.mark.parametrize("kind", ["f16", "bf16", "f32"])
def test_folded_float_projections_are_exact_ternary(tmp_path, kind):
    src = tiny_model(tmp_path / "tq.gguf", seed=4)
    dst = rewrite(src, tmp_path / f"{kind}.gguf", replace=_folded(src, kind))
    rs, rd = GGUFReader(src), GGUFReader(dst)
    for name, ti in rs.tensors.items():
        if _is_proj(name):
            a, b = read_ternary(rs, name, ti.shape), read_ternary(rd, name, ti.shape)
            assert np.array_equal(a.t, b.t), name
            # the f16/bf16 file rounded gamma; tribit.scale.* metadata restores it exactly
            assert a.gamma == b.gamma, (name, a.gamma, b.gamma)
    toks = _tokens()
    a = tribit.load(src, kv_type="f32").logits(toks)
    b = tribit.load(dst, kv_type="f32").logits(toks)
    assert np.array_equal(a, b)


def test_folded_f16_without_scale_metadata_uses_the_stored_value(tmp_path):
    src = tiny_model(tmp_path / "tq.gguf", seed=4)
    patch = {k: None for k in GGUFReader(src).metadata if k.startswith("tribit.scale.")}
    dst = rewrite(src, tmp_path / "f16.gguf", md_patch=patch, replace=_folded(src, "f16"))
    rs, rd = GGUFReader(src), GGUFReader(dst)
    name = "blk.0.attn_q.weight"
    a, b = read_ternary(rs, name, rs.tensors[name].shape), read_ternary(rd, name, (256, 256))
    assert np.array_equal(a.t, b.t)
    assert b.gamma == np.float32(np.float16(a.gamma))


@pytest.mark.parametrize("kind", ["f32", "bf16"])
def test_float_masters_are_ternarized_with_absmean(tmp_path, kind):
    wts = random_weights(256, 512, 2, 4, 2, 300, seed=5)
    tq = write_model(tmp_path / "tq.gguf", wts, qtype="tq2_0")
    repl = {}
    for name, arr in wts.items():
        if _is_proj(name):
            data = arr if kind == "f32" else f32_to_bf16(arr)
            repl[name] = (arr.shape, GGMLType.F32 if kind == "f32" else GGMLType.BF16, data)
    patch = {k: None for k in GGUFReader(tq).metadata if k.startswith("tribit.scale.")}
    masters = rewrite(tq, tmp_path / "m.gguf", md_patch=patch, replace=repl)
    r = GGUFReader(masters)
    name = "blk.1.ffn_down.weight"
    w = read_ternary(r, name, (256, 512))
    src = wts[name] if kind == "f32" else r.array(name).astype(np.uint32) << 16
    t, g = absmean_ternarize(np.asarray(src).view(np.float32) if kind == "bf16" else src)
    assert np.array_equal(w.t, t) and w.gamma == g
    toks = _tokens()
    got = tribit.load(masters, kv_type="f32").logits(toks)
    if kind == "f32":  # the same absmean as the writer's: identical to the TQ2_0 file
        assert np.array_equal(got, tribit.load(tq, kv_type="f32").logits(toks))
    want = reference.forward(reference.load_reference(masters), toks)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN


def test_bitnet_projection_scale_tensors_multiply_the_output(tmp_path):
    """1bitLLM `bitnet` files may carry F32[1] `<proj>.scale`: the output is multiplied."""
    wts = random_weights(256, 512, 2, 4, 4, 300, seed=6)
    src = write_model(tmp_path / "a.gguf", wts, arch="bitnet", n_head_kv=4)
    rng = np.random.default_rng(0)
    r = GGUFReader(src)
    scales = {n: np.float32(rng.uniform(0.5, 2.0)) for n in r.tensors if _is_proj(n)}
    add = {
        n.removesuffix(".weight") + ".scale": ((1,), GGMLType.F32, np.array([s], np.float32))
        for n, s in scales.items()
    }
    with_scales = rewrite(src, tmp_path / "s.gguf", add=add)
    # the same model with each scale folded into gamma
    repl, patch = {}, {}
    for n, s in scales.items():
        t, _ = unpack_tq2_0(r.raw(n), r.tensors[n].shape)
        g = np.float32(np.float32(r.metadata["tribit.scale." + n]) * s)
        repl[n] = (t.shape, GGMLType.TQ2_0, pack_tq2_0(t, g))
        patch["tribit.scale." + n] = float(g)
    folded = rewrite(src, tmp_path / "f.gguf", md_patch=patch, replace=repl)
    toks = _tokens()
    a = tribit.load(with_scales, kv_type="f32").logits(toks)
    b = tribit.load(folded, kv_type="f32").logits(toks)
    plain = tribit.load(src, kv_type="f32").logits(toks)
    kld, top1 = kld_top1(b, a)
    assert kld <= 1e-6 and top1 == 1.0, (kld, top1)
    kld, top1 = kld_top1(plain, a)
    assert kld > KLD_MAX or top1 < TOP1_MIN, (kld, top1)  # the scales do matter
    bad = rewrite(
        src,
        tmp_path / "bad.gguf",
        add={"blk.0.attn_q.scale": ((2,), GGMLType.F32, np.ones(2, np.float32))},
    )
    with pytest.raises(ModelError, match="attn_q.scale"):
        tribit.load(bad)


@pytest.mark.parametrize("emb_type", ["f16", "bf16", "q8_0", "q6_k"])
def test_embedding_and_head_types(tmp_path, emb_type):
    path = tiny_model(tmp_path / "m.gguf", emb_type=emb_type, seed=8)
    toks = _tokens()
    want = reference.forward(reference.load_reference(path), toks)
    got = tribit.load(path, kv_type="f32").logits(toks)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)


def test_untied_head_of_llama_and_its_absence(tmp_path):
    path = tiny_model(tmp_path / "m.gguf", arch="llama", seed=9)
    m = tribit.load(path, kv_type="f32")
    assert not m.config.tied_head and m.config.rope_type == "normal"
    tied = rewrite(path, tmp_path / "t.gguf", drop=("output.weight",))
    mt = tribit.load(tied, kv_type="f32")
    assert mt.config.tied_head
    toks = _tokens()
    for p, model in ((path, m), (tied, mt)):
        want = reference.forward(reference.load_reference(p), toks)
        kld, top1 = kld_top1(want, model.logits(toks))
        assert kld <= KLD_MAX and top1 >= TOP1_MIN, (p, kld, top1)
    assert not np.allclose(m.logits(toks), mt.logits(toks), atol=1e-3)


@pytest.mark.parametrize("arch", ["bitnet-25", "bitnet-b1.58"])
def test_2b4t_family_ignores_an_output_tensor(tmp_path, arch):
    path = tiny_model(tmp_path / "m.gguf", arch=arch, seed=10)
    junk = (np.random.default_rng(1).standard_normal((300, 256)) * 0.1).astype(np.float32)
    with_out = rewrite(
        path, tmp_path / "o.gguf", add={"output.weight": ((300, 256), GGMLType.F32, junk)}
    )
    toks = _tokens()
    a = tribit.load(path, kv_type="f32").logits(toks)
    b = tribit.load(with_out, kv_type="f32")
    assert b.config.tied_head
    assert np.array_equal(a, b.logits(toks))


def test_load_argument_errors(tmp_path):
    path = tiny_model(tmp_path / "m.gguf")
    with pytest.raises(ModelError, match="kv_type"):
        tribit.load(path, kv_type="q4")
    with pytest.raises(ModelError, match="n_seq"):
        tribit.load(path, n_seq=0)
    with pytest.raises(ModelError, match="ISA .sparc. cannot run on this CPU; available: generic"):
        tribit.load(path, isa="sparc")
    no_norm = rewrite(path, tmp_path / "n.gguf", drop=("blk.1.ffn_sub_norm.weight",))
    with pytest.raises(ModelError, match="blk.1.ffn_sub_norm.weight"):
        tribit.load(no_norm)
    no_eps = rewrite(
        path, tmp_path / "e.gguf", md_patch={"bitnet-b1.58.attention.layer_norm_rms_epsilon": None}
    )
    with pytest.raises(ModelError, match="layer_norm_rms_epsilon"):
        tribit.load(no_eps)
    bad_vocab = rewrite(path, tmp_path / "v.gguf", md_patch={"bitnet-b1.58.vocab_size": 301})
    with pytest.raises(ModelError, match="vocab_size"):
        tribit.load(bad_vocab)


def test_repacking_holds_one_tensor_at_a_time(tmp_path):
    """Peak numpy memory while loading is a few times the largest projection's int8
    copy, independent of the layer count (what lets a 70B layout load in 24 GiB)."""
    n_embd, n_ff, n_layer = 256, 1024, 6
    path = tiny_model(tmp_path / "m.gguf", n_embd=n_embd, n_ff=n_ff, n_layer=n_layer)
    largest = n_ff * n_embd
    all_int8 = n_layer * (2 * n_embd * n_embd + 2 * n_embd * 128 + 3 * largest)
    tribit.load(tiny_model(tmp_path / "warm.gguf"), n_ctx=16)  # one-off import-time allocations
    tracemalloc.start()
    try:
        tribit.load(path, n_ctx=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * largest + (1 << 20), (peak, largest)
    assert peak < all_int8  # the bound above is meaningful


def test_tokenize_detokenize_through_the_model(tmp_path):
    m = tribit.load(tiny_model(tmp_path / "m.gguf"), kv_type="f32")
    text = "Hello, wörld! 🙂"
    ids = m.tokenize(text)
    assert ids[0] == m.tokenizer.bos_id == 256
    assert m.detokenize(ids[1:]) == text
    assert m.tokenize("<|end_of_text|>", add_bos=False, special=True) == [257]
    assert m.forward(ids).shape == (1, 300) and m.n_past(0) == len(ids)
