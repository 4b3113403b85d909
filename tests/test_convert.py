"""`tribit convert`: synthetic checkpoints of every family, converted and checked against
independent references (transformers models built from the original weights)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_checkpoints as H  # noqa: E402
from tribit.convert import convert_hf  # noqa: E402
from tribit.convert.families import permute_qk  # noqa: E402
from tribit.convert.hf import Checkpoint, detect_family  # noqa: E402
from tribit.convert.writer import ternary_storage  # noqa: E402
from tribit.errors import FormatError  # noqa: E402
from tribit.formats.constants import GGMLType  # noqa: E402

KL_MAX, TOP1_MIN = 2e-3, 0.95
BUILDERS = {
    "bitnet-f32": lambda d: H.make_bitnet(d, "master-f32"),
    "bitnet-bf16": lambda d: H.make_bitnet(d, "master-bf16"),
    "bitnet-packed": lambda d: H.make_bitnet(d, "packed"),
    "1bitllm": lambda d: H.make_1bitllm(d),
    "1bitllm-f16": lambda d: H.make_1bitllm(d, dims=H.Dims(n_head_kv=4), dtype="float16"),
    "llama": lambda d: H.make_llama(d),
}
# f32 masters: an F16 head would add its own rounding (documented); test the lossless path
HEAD = {"bitnet-f32": "f32", "1bitllm": "f32"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cache: dict[str, H.Synthetic] = {}

    def get(name: str) -> H.Synthetic:
        if name not in cache:
            cache[name] = BUILDERS[name](tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def _tokens(s: H.Synthetic, n: int = 48, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, s.n_tokens, n)]


# --- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,family",
    [
        ({"architectures": ["BitNetForCausalLM"], "model_type": "bitnet"}, "bitnet-b1.58"),
        ({"architectures": ["BitnetForCausalLM"], "model_type": "llama"}, "1bitllm"),
        (
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "quantization_config": {"quant_method": "bitnet"},
            },
            "llama-bitnet",
        ),
        ({"architectures": ["Qwen3Model"], "model_type": "qwen3"}, "bitnet-embedding"),
    ],
)
def test_detect_family(config, family):
    assert detect_family(config) == family


@pytest.mark.parametrize(
    "config,words",
    [
        ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "Supported"),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, "not a ternary"),
        (
            {
                "architectures": ["BitNetForCausalLM"],
                "model_type": "bitnet",
                "quantization_config": {"quant_method": "bitnet", "use_rms_norm": True},
            },
            "use_rms_norm",
        ),
        (
            {
                "architectures": ["LlamaForCausalLM"],
                "quantization_config": {"quant_method": "gptq"},
            },
            "not a ternary",
        ),
        ({"architectures": ["Gemma3TextModel"], "model_type": "gemma3_text"}, "Gemma3"),
    ],
)
def test_detect_family_refuses(config, words):
    with pytest.raises(FormatError, match=words) as e:
        detect_family(config)
    if words == "Supported":
        assert "bitnet-b1.58" in str(e.value) and "llama" in str(e.value)


# --- pieces ------------------------------------------------------------------------------


def test_permute_qk_turns_neox_rope_into_interleaved_rope():
    """HF rows with rotate-half RoPE == permuted rows with GGML's interleaved RoPE."""
    rng = np.random.default_rng(3)
    n_head, hd, k = 4, 8, 16
    w = rng.standard_normal((n_head * hd, k))
    x = rng.standard_normal((5, k))
    pos = np.arange(5, dtype=np.float64)
    neox = H._rope((x @ w.T).reshape(5, n_head, hd), pos, 10000.0, neox=True)
    perm = permute_qk(w, n_head)
    normal = H._rope((x @ perm.T).reshape(5, n_head, hd), pos, 10000.0, neox=False)
    # the permutation maps HF row (h, j*hd/2 + i) to GGUF row (h, 2i + j)
    back = normal.reshape(5, n_head, hd // 2, 2).swapaxes(2, 3).reshape(5, n_head, hd)
    np.testing.assert_allclose(back, neox, rtol=1e-12, atol=1e-12)
    assert not np.allclose(perm, w)


def test_permute_qk_gqa_uses_kv_heads():
    w = np.arange(2 * 8 * 3).reshape(16, 3)
    np.testing.assert_array_equal(permute_qk(w, 4, 2), permute_qk(w, 2))
    assert not np.array_equal(permute_qk(w, 4, 2), permute_qk(w, 4))


@pytest.mark.parametrize(
    "qtype,k,want",
    [
        ("tq2_0", 2560, GGMLType.TQ2_0),
        ("tq2_0", 3200, GGMLType.I2_S),
        ("tq2_0", 8640, GGMLType.F16),
        ("tq1_0", 4096, GGMLType.TQ1_0),
        ("tq1_0", 384, GGMLType.I2_S),
        ("i2_s", 640, GGMLType.I2_S),
        ("i2_s", 8640, GGMLType.F16),
        ("f16", 4096, GGMLType.F16),
    ],
)
def test_ternary_storage_fallback(qtype, k, want):
    assert ternary_storage(qtype, k) == want


def test_checkpoint_reader_matches_safetensors(ckpt):
    import torch
    from safetensors.torch import load_file

    s = ckpt("bitnet-packed")
    c = Checkpoint(s.dir)
    ref = load_file(str(s.dir / "model.safetensors"))
    for name in (
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.mlp.down_proj.weight_scale",
        "model.norm.weight",
    ):
        got = c.read(name)
        want = ref[name].to(torch.float32 if ref[name].is_floating_point() else ref[name].dtype)
        np.testing.assert_array_equal(got, want.numpy())


# --- end to end against the transformers references (GGUF read by gguf-py) ----------------


def _scales(path) -> dict[str, float]:
    import gguf

    r = gguf.GGUFReader(str(path))
    return {
        k[len("tribit.scale.") :]: float(f.parts[f.data[0]][0])
        for k, f in r.fields.items()
        if k.startswith("tribit.scale.")
    }


@pytest.mark.parametrize("qtype", ["tq2_0", "tq1_0", "f16"])
@pytest.mark.parametrize(
    "name", ["bitnet-f32", "bitnet-bf16", "bitnet-packed", "1bitllm-f16", "llama"]
)
def test_convert_matches_reference(ckpt, tmp_path, name, qtype):
    s = ckpt(name)
    out = tmp_path / "m.gguf"
    rep = convert_hf(s.dir, out, qtype=qtype, head=HEAD.get(name, "f16"), progress=False)
    assert not rep.fallbacks
    meta, w = H.read_gguf(out)  # PyPI gguf-py reads the file
    arch = {"bitnet-b1.58": "bitnet-b1.58", "1bitllm": "bitnet", "llama-bitnet": "llama"}
    assert meta["general.architecture"] == arch[s.family]
    assert meta["general.file_type"] == {"tq2_0": 37, "tq1_0": 36, "f16": 1}[qtype]
    n_vocab = s.effective["model.embed_tokens.weight"].shape[0]
    assert meta[f"{meta['general.architecture']}.vocab_size"] == n_vocab
    assert ("output.weight" in w) == (s.family == "llama-bitnet")
    # every ternary tensor: exact scale in metadata, and gamma*T equal to the original's
    scales = _scales(out)
    assert len(scales) == 7 * s.config["num_hidden_layers"]
    tokens = _tokens(s)
    kl, top1 = H.kl_top1(s.reference(tokens), H.forward(meta, w, tokens))
    assert kl <= KL_MAX and top1 >= TOP1_MIN, (kl, top1)


def test_scales_are_exact(ckpt, tmp_path):
    """Packed: multiply (2B-4T) and divide (Llama) conventions, exact; masters: absmean (the
    reference's `round(w * s) / s` double inversion may differ from mean|W| by an ulp)."""
    for name in ("bitnet-packed", "llama", "bitnet-bf16"):
        s = ckpt(name)
        out = tmp_path / f"{name}.gguf"
        convert_hf(s.dir, out, progress=False)
        scales = _scales(out)
        for i in range(s.config["num_hidden_layers"]):
            eff = s.effective[f"model.layers.{i}.self_attn.k_proj.weight"]
            gamma = np.float32(np.abs(eff).max())
            got = np.float32(scales[f"blk.{i}.attn_k.weight"])
            if name == "bitnet-bf16":
                assert abs(got - gamma) <= 2 * np.spacing(gamma)
            else:
                assert got == gamma


def test_llama_qk_rows_are_permuted(ckpt, tmp_path):
    s = ckpt("llama")
    out = tmp_path / "l.gguf"
    convert_hf(s.dir, out, qtype="f16", progress=False)
    _, w = H.read_gguf(out)
    q = s.effective["model.layers.0.self_attn.q_proj.weight"]
    k = s.effective["model.layers.0.self_attn.k_proj.weight"]
    n_head, n_kv = s.config["num_attention_heads"], s.config["num_key_value_heads"]
    np.testing.assert_allclose(w["blk.0.attn_q.weight"], permute_qk(q, n_head), rtol=1e-3)
    np.testing.assert_allclose(w["blk.0.attn_k.weight"], permute_qk(k, n_head, n_kv), rtol=1e-3)
    np.testing.assert_allclose(
        w["blk.0.attn_v.weight"], s.effective["model.layers.0.self_attn.v_proj.weight"], rtol=1e-3
    )


def _decode_i2s(raw: np.ndarray, shape) -> tuple[np.ndarray, np.float32]:
    """docs/FORMATS.md 3.4, written out independently of tribit.quant."""
    m, k = shape
    codes = raw[: m * k // 4].reshape(-1, 32)
    vals = np.stack([(codes >> 6) & 3, (codes >> 4) & 3, (codes >> 2) & 3, codes & 3], axis=1)
    t = vals.reshape(m, k).astype(np.int8) - 1
    return t, np.frombuffer(raw[m * k // 4 : m * k // 4 + 4].tobytes(), "<f4")[0]


def test_fallback_i2s_like_the_3b(ckpt, tmp_path):
    from tribit.formats import GGUFReader

    s = ckpt("1bitllm")  # n_ff 384: ffn_down rows of 384 are not 256-blocks
    out = tmp_path / "ob.gguf"
    rep = convert_hf(s.dir, out, head="f32", progress=False)
    assert sorted(n for n, _ in rep.fallbacks) == ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"]
    assert {t for _, t in rep.fallbacks} == {"I2_S"}
    r = GGUFReader(out)
    info = r.tensors["blk.1.ffn_down.weight"]
    assert info.ggml_type == GGMLType.I2_S and info.nbytes == 256 * 384 // 4 + 32
    t, gamma = _decode_i2s(np.asarray(r.raw(info.name)), info.shape)
    eff = s.effective["model.layers.1.mlp.down_proj.weight"]
    assert (
        gamma
        == np.float32(np.abs(eff).max())
        == np.float32(r.metadata["tribit.scale.blk.1.ffn_down.weight"])
    )
    np.testing.assert_array_equal(t.astype(np.float32) * gamma, eff)
    assert r.tensors["blk.1.ffn_up.weight"].ggml_type == GGMLType.TQ2_0
    assert r.metadata["general.architecture"] == "bitnet"
    tokens = r.metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == 320 and tokens[-1] == "[PAD319]"  # padded to the embedding rows


def test_fallback_f16(tmp_path):
    s = H.make_bitnet(tmp_path / "c", "packed", dims=H.Dims(n_ff=320))
    out = tmp_path / "f.gguf"
    rep = convert_hf(s.dir, out, progress=False)
    assert {t for _, t in rep.fallbacks} == {"F16"}
    meta, w = H.read_gguf(out)
    eff = s.effective["model.layers.0.mlp.down_proj.weight"]
    np.testing.assert_allclose(w["blk.0.ffn_down.weight"], eff, rtol=1e-3)
    assert np.float32(meta["tribit.scale.blk.0.ffn_down.weight"]) == np.abs(eff).max()
    tokens = _tokens(s)
    kl, top1 = H.kl_top1(s.reference(tokens), H.forward(meta, w, tokens))
    assert kl <= KL_MAX and top1 >= TOP1_MIN


@pytest.mark.parametrize(
    "head,gtype",
    [
        ("q8_0", GGMLType.Q8_0),
        ("q6_k", GGMLType.Q6_K),
        ("bf16", GGMLType.BF16),
        ("f32", GGMLType.F32),
        ("f16", GGMLType.F16),
    ],
)
def test_head_types(ckpt, tmp_path, head, gtype):
    from tribit.formats import GGUFReader

    s = ckpt("llama")
    out = tmp_path / "h.gguf"
    convert_hf(s.dir, out, head=head, progress=False)
    r = GGUFReader(out)
    assert r.tensors["token_embd.weight"].ggml_type == gtype
    assert r.tensors["output.weight"].ggml_type == gtype
    assert r.tensors["output_norm.weight"].ggml_type == GGMLType.F32
    if head != "f16":
        return
    meta, w = H.read_gguf(out)
    # bf16 values are exact in f16 except the f16 subnormals (|x| < 6e-5)
    np.testing.assert_allclose(w["output.weight"], s.effective["lm_head.weight"], rtol=0, atol=3e-8)


def test_sharded_equals_single(ckpt, tmp_path):
    import shutil

    s = ckpt("bitnet-packed")
    convert_hf(s.dir, tmp_path / "a.gguf", progress=False)
    d = tmp_path / "sharded"
    shutil.copytree(s.dir, d)
    H.shard(d, 3)
    assert not (d / "model.safetensors").exists()
    convert_hf(d, tmp_path / "b.gguf", name=s.dir.name, progress=False)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


# --- bad input -------------------------------------------------------------------------


def _copy(s: H.Synthetic, tmp_path):
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(s.dir, d)
    return d


def test_bad_config_and_tensors(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    s = ckpt("bitnet-packed")
    d = _copy(s, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    with pytest.raises(FormatError, match="hidden_act"):
        convert_hf(d, tmp_path / "x.gguf", progress=False)
    (d / "config.json").write_text(
        json.dumps({**cfg, "quantization_config": {"quant_method": "bitnet", "use_rms_norm": True}})
    )
    with pytest.raises(FormatError, match="use_rms_norm"):
        convert_hf(d, tmp_path / "x.gguf", progress=False)
    (d / "config.json").write_text(json.dumps(cfg))

    tensors = load_file(str(d / "model.safetensors"))
    name = "model.layers.1.self_attn.o_proj.weight"
    bad = dict(tensors)
    del bad[name]
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(FormatError, match="o_proj.weight.*missing"):
        convert_hf(d, tmp_path / "x.gguf", progress=False)
    bad = dict(tensors)
    bad[name] = tensors[name] | 0x03  # code 3 is not a ternary value
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(FormatError, match="code 3"):
        convert_hf(d, tmp_path / "x.gguf", progress=False)
    assert not list(tmp_path.glob("x.gguf*"))  # no partial output left behind
    bad = dict(tensors)
    bad[name] = tensors[name][:-1].clone()
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(FormatError, match="shape"):
        convert_hf(d, tmp_path / "x.gguf", progress=False)


def test_bad_safetensors_files(ckpt, tmp_path):
    s = ckpt("bitnet-packed")
    d = _copy(s, tmp_path)
    path = d / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated data
    with pytest.raises(FormatError, match="offsets"):
        Checkpoint(d)
    path.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])  # absurd header length
    with pytest.raises(FormatError, match="header length"):
        Checkpoint(d)
    path.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(FormatError, match="invalid safetensors header"):
        Checkpoint(d)
    path.unlink()
    with pytest.raises(FormatError, match="no \\*.safetensors"):
        Checkpoint(d)
    (d / "config.json").unlink()
    with pytest.raises(FormatError, match="config.json"):
        Checkpoint(d)


def test_cli_convert(ckpt, tmp_path, capsys):
    from tribit.cli import convert as cli
    from tribit.cli.main import main
    from tribit.convert import HEAD_TYPES, QTYPES

    assert cli.QTYPES == QTYPES and cli.HEAD_TYPES == HEAD_TYPES  # the CLI's copy is in sync

    s = ckpt("bitnet-packed")
    out = tmp_path / "cli.gguf"
    assert (
        main(
            [
                "convert",
                str(s.dir),
                "-o",
                str(out),
                "--qtype",
                "tq1_0",
                "--name",
                "tiny",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "TQ1_0" in capsys.readouterr().out
    meta, _ = H.read_gguf(out)
    assert meta["general.name"] == "tiny" and meta["general.file_type"] == 36
    assert main(["convert", str(tmp_path), "-o", str(out)]) == 1  # no config.json: clean error


# --- the runtime (tribit.load) against the same references --------------------------------


@pytest.mark.parametrize(
    "name,qtype",
    [
        ("bitnet-f32", "tq2_0"),
        ("bitnet-bf16", "tq1_0"),
        ("bitnet-packed", "tq2_0"),
        ("1bitllm", "tq2_0"),
        ("1bitllm-f16", "i2_s"),
        ("llama", "tq2_0"),
        ("llama", "f16"),
    ],
)
def test_runtime_matches_reference(ckpt, tmp_path, name, qtype):
    from tribit.model import load

    s = ckpt(name)
    out = tmp_path / "rt.gguf"
    convert_hf(s.dir, out, qtype=qtype, head=HEAD.get(name, "f16"), progress=False)
    model = load(str(out), n_threads=1)
    tokens = _tokens(s, 48, seed=1)
    kl, top1 = H.kl_top1(s.reference(tokens), np.asarray(model.logits(tokens)))
    assert kl <= KL_MAX and top1 >= TOP1_MIN, (kl, top1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama", "1bitllm-f16"])
def test_mainline_llama_cpp_reads_tq_files(ckpt, tmp_path, name):
    """Mainline llama.cpp (llama-cpp-python, if installed) runs our TQ2_0 files. Its TQ kernels
    quantize activations per 256-block (Q8_K), so the bound is looser than ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    s = ckpt(name)
    out = tmp_path / "mainline.gguf"
    convert_hf(s.dir, out, qtype="tq2_0", progress=False)
    llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False)
    tokens = _tokens(s, 32, seed=2)
    llm.eval(tokens)
    got = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
    kl, top1 = H.kl_top1(s.reference(tokens), got)
    assert kl <= 2e-2 and top1 >= 0.85, (kl, top1)


# --- BitNet-embedding (docs/FORMATS.md 2.7) ------------------------------------------------

SMALL = H.EmbeddingDims(n_embd=256, n_ff=512, n_layer=1, n_head=4, n_head_kv=2, head_dim=64)
GGUF_OF_HF = {  # bitnet.cpp's embedding converter map, spelled out (module under layers.N.)
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    **{f"{hf}.norm": f"{g}_norm_in" for g, hf in H.HF_NAMES.items() if g in H.GGUF_PROJ},
}


@pytest.fixture(scope="module")
def embedding(tmp_path_factory):
    """The 0.6B shape family (2 layers), bf16 masters, names without "model.", converted
    to I2_S as bitnet.cpp's converter stores it."""
    s = H.make_bitnet_embedding(tmp_path_factory.mktemp("be") / "ckpt", seed=3)
    out = s.dir.parent / "be.gguf"
    rep = convert_hf(s.dir, out, qtype="i2_s", progress=False)
    return s, out, rep


def test_bitnet_embedding_tensors_and_metadata(embedding):
    from tokenizers import Tokenizer

    import tribit
    from tribit.embedding import embedding_tokens
    from tribit.formats import GGUFReader

    s, out, rep = embedding
    assert rep.types == {"I2_S": 14, "F16": 1, "F32": 1 + 2 * (2 + 2 + 7)} and not rep.fallbacks
    r = GGUFReader(out)
    md = r.metadata
    assert md["general.architecture"] == "qwen3" and md["general.file_type"] == 40
    want = {
        "qwen3.pooling_type": 3,  # LAST: the checkpoint has no sentence-transformers pooling
        "qwen3.embedding_length": 1024,
        "qwen3.feed_forward_length": 3072,
        "qwen3.block_count": 2,
        "qwen3.attention.head_count": 16,
        "qwen3.attention.head_count_kv": 8,
        "qwen3.attention.key_length": 128,
        "qwen3.attention.value_length": 128,
        "qwen3.rope.dimension_count": 128,
        "qwen3.context_length": 512,
        "qwen3.vocab_size": 320,
        "tokenizer.ggml.add_eos_token": True,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.pre": "qwen2",
    }
    assert {k: md[k] for k in want} == want
    assert md["qwen3.rope.freq_base"] == 1e6 and np.float32(
        md["qwen3.attention.layer_norm_rms_epsilon"]
    ) == np.float32(1e-6)
    tokens = md["tokenizer.ggml.tokens"]
    # EOS: what the tokenizer appends (<|endoftext|>), not tokenizer_config's <|im_end|>
    assert tokens[md["tokenizer.ggml.eos_token_id"]] == "<|endoftext|>"
    assert not any(k.startswith("tribit.embedding.") for k in md)  # no prompts in the checkpoint

    # every tensor: the checkpoint's (norms and embeddings bit-equal, projections the torch
    # absmean codes with their scale), under bitnet.cpp's names; nothing else (no output)
    names = {"token_embd.weight", "output_norm.weight"}
    eff = s.effective
    masters = _masters(s)
    # bf16 -> F16 is exact but for values below F16's normal range (2^-14)
    np.testing.assert_allclose(
        r.array("token_embd.weight").astype(np.float32), eff["embed_tokens.weight"], atol=2**-24
    )
    np.testing.assert_array_equal(r.array("output_norm.weight"), eff["norm.weight"])
    for i in range(2):
        for hf, g in GGUF_OF_HF.items():
            name = f"blk.{i}.{g}.weight"
            names.add(name)
            np.testing.assert_array_equal(r.array(name), eff[f"layers.{i}.{hf}.weight"])
        for g in H.GGUF_PROJ:
            name = f"blk.{i}.{g}.weight"
            names.add(name)
            info = r.tensors[name]
            t, gamma = _decode_i2s(np.asarray(r.raw(name)), info.shape)
            w = eff[f"layers.{i}.{H.HF_NAMES[g]}.weight"]  # torch's gamma * T
            t_ref, g_ref = H.weight_quant(masters[f"layers.{i}.{H.HF_NAMES[g]}.weight"])
            np.testing.assert_array_equal(t, t_ref)
            assert gamma == np.float32(md[f"tribit.scale.{name}"])
            assert abs(gamma - g_ref) <= np.spacing(g_ref)  # mean|W| correctly rounded vs torch's
            np.testing.assert_allclose(t * gamma, w, rtol=2e-7)
    assert set(r.tensors) == names

    # texts are tokenized as the checkpoint's tokenizer does, EOS appended
    model = tribit.load(out, n_seq=1, n_threads=2)
    tk = Tokenizer.from_file(str(s.dir / "tokenizer.json"))
    for text in H.SENTENCES:
        assert embedding_tokens(model, text, "last") == tk.encode(text).ids
    assert model.config.pooling == "last" and model.describe()["input_norms"] == 14


def _masters(s: H.Synthetic) -> dict[str, np.ndarray]:
    """The master weights as the checkpoint stores them (bf16 widened)."""
    from safetensors.torch import load_file

    return {k: v.float().numpy() for k, v in load_file(str(s.dir / "model.safetensors")).items()}


@pytest.mark.parametrize("seed,prefix,qtype", [(3, "", "i2_s"), (4, "model.", "tq2_0")])
def test_bitnet_embedding_matches_reference(embedding, tmp_path, seed, prefix, qtype):
    """`Model.embed` of the converted file against transformers' Qwen3Model with the BitNet
    hooks (tests/test_embedding_model.py's reference) on the checkpoint's weights: pooled
    cosine >= 0.9999, and on the reference's own projection inputs the converted input
    norms and tribit's quantizer give its int8 codes. Measured over seeds 3-8 (6 texts
    each): pooled cosine 0.99954-1.0; below 0.9999 only where one int8 code rounds the other
    way at a float32 tie and the difference spreads through the later layers (as in
    test_embedding_model)."""
    from tokenizers import Tokenizer

    import tribit
    from tribit.model import reference
    from tribit.quant import quantize_activations

    if seed == 3:
        s, out, _ = embedding
    else:
        s = H.make_bitnet_embedding(tmp_path / "ckpt", seed=seed, prefix=prefix)
        out = tmp_path / "be.gguf"
        convert_hf(s.dir, out, qtype=qtype, progress=False)
    tk = Tokenizer.from_file(str(s.dir / "tokenizer.json"))
    model = tribit.load(out, kv_type="f32", n_seq=3, n_threads=2)
    got = model.embed(H.SENTENCES)
    ref = reference.load_reference(out)
    n_diff = n_all = 0
    for text, v in zip(H.SENTENCES, got, strict=True):
        toks = tk.encode(text).ids
        h = s.reference(toks)[-1].astype(np.float64)
        assert float(v @ h) / np.linalg.norm(h) >= 0.9999, text
    config = _qwen3_config(s)
    codes: list = []
    inputs: list = []
    hf = H.bitnet_embedding_reference(config, s.effective, codes, inputs)
    import torch

    with torch.no_grad():
        hf(torch.tensor([tk.encode(H.SENTENCES[0]).ids]), use_cache=False)
    for (layer, which, x), (_, _, q_ref) in zip(inputs, codes, strict=True):
        x = reference.rmsnorm(x, ref.layers[layer]["norm_in"][which], 1e-6)
        d = quantize_activations(x.astype(np.float32))[0][:, : x.shape[1]].astype(int) - q_ref
        assert np.abs(d).max() <= 1
        n_diff, n_all = n_diff + np.count_nonzero(d), n_all + d.size
    assert n_diff <= n_all * 1e-5, (n_diff, n_all)


def _qwen3_config(s: H.Synthetic):
    import transformers

    keep = {k: v for k, v in s.config.items() if k not in ("architectures", "torch_dtype")}
    return transformers.Qwen3Config(**keep)


def test_bitnet_embedding_pooling_and_prompts(tmp_path):
    import tribit
    from tribit.errors import TribitError
    from tribit.formats import GGUFReader

    prompts = {"query": "Instruct: find passages\nQuery: ", "document": ""}
    s = H.make_bitnet_embedding(tmp_path / "c", SMALL, pooling="mean_tokens", prompts=prompts)
    out = tmp_path / "m.gguf"
    convert_hf(s.dir, out, progress=False)
    md = GGUFReader(out).metadata
    assert md["qwen3.pooling_type"] == 1  # the checkpoint's own pooling config wins
    assert md["tribit.embedding.prompt.query"] == prompts["query"]
    assert "tribit.embedding.prompt.document" not in md  # empty: nothing to prepend
    model = tribit.load(out, n_seq=2, n_threads=2)
    texts = ["where is the apple?", "the kitchen"]
    last = dict(pooling="last")  # (a BitNet-embedding file saying mean warns)
    np.testing.assert_array_equal(
        model.embed(texts, prompt_name="query", **last),
        model.embed([prompts["query"] + t for t in texts], **last),
    )
    assert not np.allclose(
        model.embed(texts[:1], prompt_name="query", **last), model.embed(texts[:1], **last)
    )
    with pytest.raises(TribitError, match="no prompt 'document'.*query"):
        model.embed(texts, prompt_name="document", **last)
    cfg = json.loads((s.dir / "1_Pooling" / "config.json").read_text())
    for flags, words in (
        ({"pooling_mode_mean_tokens": False, "pooling_mode_lasttoken": True}, None),
        ({"pooling_mode_max_tokens": True}, "max_tokens"),
        ({"pooling_mode_cls_token": True}, "several modes"),
    ):
        (s.dir / "1_Pooling" / "config.json").write_text(json.dumps({**cfg, **flags}))
        if words is None:
            convert_hf(s.dir, out, progress=False)
            assert GGUFReader(out).metadata["qwen3.pooling_type"] == 3
        else:
            with pytest.raises(FormatError, match=words):
                convert_hf(s.dir, out, progress=False)
    modules = json.loads((s.dir / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (s.dir / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(FormatError, match="Dense"):
        convert_hf(s.dir, out, progress=False)


def test_bitnet_embedding_refusals(tmp_path):
    from safetensors.torch import load_file, save_file

    s = H.make_bitnet_embedding(tmp_path / "c", SMALL, prefix="model.")
    path = s.dir / "model.safetensors"
    tensors = load_file(str(path))
    out = tmp_path / "x.gguf"

    def convert_with(bad: dict, match: str) -> None:
        save_file(bad, str(path))
        with pytest.raises(FormatError, match=match):
            convert_hf(s.dir, out, progress=False)
        assert not list(tmp_path.glob("x.gguf*"))

    norm = "model.layers.0.mlp.down_proj.norm.weight"
    convert_with({k: v for k, v in tensors.items() if k != norm}, "down_proj.norm.weight.*missing")
    # a plain Qwen3 checkpoint: no input norms at all
    plain = {k: v for k, v in tensors.items() if not k.endswith("_proj.norm.weight")}
    convert_with(plain, "without per-projection input norms")
    # o_proj's input norm is n_head * head_dim wide (256 here), down_proj's n_ff
    convert_with({**tensors, norm: tensors[norm][:256].clone()}, "down_proj.norm.weight: shape")
    q = "model.layers.0.self_attn.q_proj.weight"
    convert_with({**tensors, q: tensors[q][:-64].clone()}, "q_proj.weight: shape")
    qn = "model.layers.0.self_attn.q_norm.weight"
    convert_with({k: v for k, v in tensors.items() if k != qn}, "q_norm.weight.*missing")
    import torch

    convert_with({**tensors, q: tensors[q].to(torch.int8)}, "float weights")
    save_file(tensors, str(path))
    cfg = json.loads((s.dir / "config.json").read_text())
    for bad, match in (
        ({"use_sliding_window": True}, "sliding-window"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ):
        (s.dir / "config.json").write_text(json.dumps({**cfg, **bad}))
        with pytest.raises(FormatError, match=match):
            convert_hf(s.dir, out, progress=False)
    (s.dir / "config.json").write_text(json.dumps(cfg))
    convert_hf(s.dir, out, progress=False)  # the intact checkpoint converts


def test_cli_convert_bitnet_embedding(tmp_path, capsys):
    import tribit
    from tribit.cli.main import main

    s = H.make_bitnet_embedding(tmp_path / "c", SMALL, prompts={"query": "query: "})
    out = tmp_path / "e.gguf"
    assert main(["convert", str(s.dir), "-o", str(out), "--qtype", "i2_s", "--no-progress"]) == 0
    assert "I2_S" in capsys.readouterr().out
    npy = str(tmp_path / "v.npy")
    assert main(["embed", "-m", str(out), "-o", npy, "--prompt-name", "query", "hello world"]) == 0
    v = np.load(npy)
    want = tribit.load(out, n_threads=2).embed(["query: hello world"])
    assert v.shape == (1, 256) and np.array_equal(v, want)
    assert main(["embed", "-m", str(out), "--prompt-name", "doc", "hello"]) == 1  # clean error
