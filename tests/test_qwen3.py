"""The Qwen3 block (docs/FORMATS.md 1.6): tribit's native forward against the numpy oracle
and against transformers' `Qwen3ForCausalLM`, built by the recipe of docs/FORMATS.md 2.6
(float masters, projections overwritten with gamma * T, projection inputs fake-quantized
per token by forward-pre-hooks). The BitNet-embedding variant (per-projection input norms)
is tested in test_embedding_model.py."""

import numpy as np
import pytest

import tribit
from hf_checkpoints import GGUF_PROJ as PROJ
from hf_checkpoints import HF_NAMES as LLAMA_HF_NAMES
from tiny_models import kld_top1, qwen3_model, qwen3_weights, random_weights, write_model
from tribit import _core
from tribit.errors import ModelError
from tribit.model import reference

KLD_MAX, TOP1_MIN = 2e-3, 0.95
N_VOCAB = 300


def _tokens(n=64, seed=1):
    return np.random.default_rng(seed).integers(0, N_VOCAB, n)


@pytest.mark.parametrize(
    "qtype,n_head,n_head_kv,head_dim,tied,norm_in",
    [
        ("i2_s", 4, 2, None, True, False),  # GQA 2, tied head
        ("tq2_0", 4, 1, None, False, False),  # GQA 4, untied head
        ("f32", 4, 4, None, True, False),  # float (F32 gamma * T) projections, MHA
        ("i2_s", 4, 2, 128, True, False),  # head_dim from key_length (not 256 / 4)
        ("tq2_0", 4, 2, 128, True, True),  # BitNet-embedding's per-projection norms
    ],
)
def test_qwen3_native_matches_oracle(tmp_path, qtype, n_head, n_head_kv, head_dim, tied, norm_in):
    path = qwen3_model(
        tmp_path / "m.gguf",
        qtype,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        tied=tied,
        norm_in=norm_in,
    )
    model = tribit.load(path, kv_type="f32", n_threads=2)
    c = model.config
    assert c.arch == "qwen3" and c.qk_norm and not c.sub_norms and c.act == "silu"
    assert c.head_dim == (head_dim or 256 // n_head) and c.rope_theta == 1e6
    assert model.describe()["input_norms"] == (14 if norm_in else 0)
    toks = _tokens()
    want = reference.forward(reference.load_reference(path), toks)
    got = model.logits(toks)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)
    # hidden states: the oracle's final-norm rows, no head
    model.reset()
    h = model.forward(toks, 0, 0, logits="all", hidden=True)
    assert h.shape == (64, 256) and h.dtype == np.float32
    ref_h = reference.forward(reference.load_reference(path), toks, hidden=True)
    cos = np.sum(h * ref_h, -1) / np.linalg.norm(h, axis=-1) / np.linalg.norm(ref_h, axis=-1)
    assert cos.min() > 0.9999, cos.min()


def test_qwen3_without_qk_norm_is_caught(tmp_path):
    """The q/k norms are read and applied: dropping them from the oracle breaks the bound."""
    path = qwen3_model(tmp_path / "m.gguf", "i2_s")
    ref = reference.load_reference(path)
    toks = _tokens()
    got = tribit.load(path, kv_type="f32").logits(toks)
    for L in ref.layers:
        L["attn_q_norm"] = np.ones_like(L["attn_q_norm"])
        L["attn_k_norm"] = np.ones_like(L["attn_k_norm"])
    kld, top1 = kld_top1(reference.forward(ref, toks), got)
    assert kld > KLD_MAX or top1 < TOP1_MIN, (kld, top1)


def test_qwen3_every_isa_agrees(tmp_path):
    path = qwen3_model(tmp_path / "m.gguf", "i2_s", head_dim=128, norm_in=True)
    toks = _tokens(32)
    outs = {
        isa: tribit.load(path, kv_type="f32", isa=isa).logits(toks) for isa in _core.runnable_isas()
    }
    for isa, out in outs.items():
        # ternary sums are exact on every ISA; float parts (the head) may round differently
        np.testing.assert_allclose(out, outs["generic"], atol=2e-3, err_msg=isa)


def test_qwen3_missing_qk_norm_is_refused(tmp_path):
    wts = random_weights(256, 512, 2, 4, 2, N_VOCAB, sub_norms=False, qk_norm=True)
    del wts["blk.1.attn_k_norm.weight"]
    path = write_model(tmp_path / "m.gguf", wts, "qwen3", "i2_s")
    with pytest.raises(ModelError, match="attn_k_norm"):
        tribit.load(path)


def test_wrong_width_input_norm_is_refused(tmp_path):
    wts = random_weights(256, 512, 1, 4, 2, N_VOCAB, sub_norms=False, qk_norm=True, norm_in=True)
    wts["blk.0.ffn_down_norm_in.weight"] = wts["blk.0.ffn_down_norm_in.weight"][:256]
    path = write_model(tmp_path / "m.gguf", wts, "qwen3", "i2_s")
    with pytest.raises(ModelError, match="ffn_down_norm_in"):
        tribit.load(path)


# --- transformers' Qwen3ForCausalLM as the independent reference -----------------------------

# GGUF suffix -> HF module path inside a layer: Llama's names plus the q/k norms
HF_NAMES = {**LLAMA_HF_NAMES, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}


def hf_state(weights: dict, norm_in: bool = False) -> dict:
    """HF parameter name -> float32 array: projections as gamma * T (docs/FORMATS.md 1.1);
    with norm_in, the per-projection input norms under `<proj>.norm.weight` (the names
    bitnet.cpp's embedding converter maps from)."""
    from tribit.quant import absmean_ternarize

    state = {
        "model.embed_tokens.weight": weights["token_embd.weight"],
        "model.norm.weight": weights["output_norm.weight"],
    }
    if "output.weight" in weights:
        state["lm_head.weight"] = weights["output.weight"]
    for name, arr in weights.items():
        if not name.startswith("blk."):
            continue
        _, i, suffix, _ = name.split(".")
        if suffix.endswith("_norm_in"):
            state[f"model.layers.{i}.{HF_NAMES[suffix.removesuffix('_norm_in')]}.norm.weight"] = arr
            continue
        if suffix in PROJ:
            t, gamma = absmean_ternarize(arr)
            arr = gamma * t.astype(np.float32)
        state[f"model.layers.{i}.{HF_NAMES[suffix]}.weight"] = arr
    return state


def build_hf_qwen3(weights, n_head, n_head_kv, head_dim, tied, causal_lm=True):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_model_transformers import fake_quant_hook

    n_vocab, n_embd = weights["token_embd.weight"].shape
    cfg = transformers.Qwen3Config(
        vocab_size=n_vocab,
        hidden_size=n_embd,
        intermediate_size=weights["blk.0.ffn_gate.weight"].shape[0],
        num_hidden_layers=sum(1 for k in weights if k.endswith(".attn_norm.weight")),
        num_attention_heads=n_head,
        num_key_value_heads=n_head_kv,
        head_dim=head_dim,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        tie_word_embeddings=tied,
        hidden_act="silu",
        attention_bias=False,
        use_sliding_window=False,
    )
    cfg._attn_implementation = "eager"
    cls = transformers.Qwen3ForCausalLM if causal_lm else transformers.Qwen3Model
    model = cls(cfg).float().eval()
    prefix = "" if causal_lm else "model."
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, arr in hf_state(weights).items():
            key = key if causal_lm else key.removeprefix(prefix)
            if key not in params:  # the tied lm_head
                continue
            assert params[key].shape == arr.shape, key
            params[key].copy_(torch.from_numpy(np.ascontiguousarray(arr, np.float32)))
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in {
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        }:
            mod.register_forward_pre_hook(fake_quant_hook)
    return model


@pytest.mark.parametrize(
    "qtype,n_head_kv,head_dim,tied",
    [("i2_s", 2, 64, True), ("tq2_0", 1, 128, False), ("f32", 4, 64, True)],
)
def test_qwen3_matches_transformers(tmp_path, qtype, n_head_kv, head_dim, tied):
    torch = pytest.importorskip("torch")
    n_head = 4
    wts = qwen3_weights(
        256, 512, 2, n_head, n_head_kv, N_VOCAB, seed=5, tied=tied, head_dim=head_dim
    )
    hf = build_hf_qwen3(wts, n_head, n_head_kv, head_dim, tied)
    path = write_model(
        tmp_path / "m.gguf",
        wts,
        "qwen3",
        qtype,
        n_head=n_head,
        n_head_kv=n_head_kv,
        rope_theta=1e6,
        eps=1e-6,
    )
    toks = _tokens()
    with torch.no_grad():
        want = (
            hf(torch.from_numpy(toks[None].astype(np.int64)), use_cache=False)
            .logits[0]
            .double()
            .numpy()
        )
    got = tribit.load(path, kv_type="f32", n_threads=2).logits(toks)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)
    oracle = reference.forward(reference.load_reference(path), toks)
    kld_o, top1_o = kld_top1(want, oracle)
    assert kld_o <= KLD_MAX and top1_o >= TOP1_MIN, (kld_o, top1_o)
