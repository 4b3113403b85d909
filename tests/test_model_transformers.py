"""tribit against an independent reference: transformers' BitNet and Llama models.

Recipe of docs/FORMATS.md 2.6: a tiny float32 `BitNetForCausalLM` (or `LlamaForCausalLM`
for the ternary `llama` arch) whose projections are overwritten with gamma * T and
whose projection inputs are fake-quantized (per-token absmax int8) by forward-pre-hooks.
The same master weights go to GGUF through tribit's writer; tribit must agree by
teacher-forced mean KLD and top-1. The `llama` case checks the Q/K permutation that
llama.cpp's converter applies + normal RoPE against HF's rotate_half RoPE.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import tribit  # noqa: E402
from hf_checkpoints import GGUF_PROJ as PROJ  # noqa: E402
from hf_checkpoints import HF_NAMES  # noqa: E402
from sharp_models import N_EMBD, N_FF, N_HEAD, N_LAYER, N_VOCAB, sharp_weights  # noqa: E402
from tiny_models import kld_top1, write_model  # noqa: E402
from tribit.model import reference  # noqa: E402
from tribit.quant import absmean_ternarize  # noqa: E402

KLD_MAX, TOP1_MIN = 2e-3, 0.95
THETA = 10000.0

HOOKED = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's LlamaModel.permute (HF halves -> interleaved pairs)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def fake_quant_hook(module, args):
    """docs/FORMATS.md 1.2: per-token absmax int8, round half to even, back to float."""
    x = args[0]
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return ((x * scale).round().clamp(-128, 127) / scale,) + tuple(args[1:])


def build_hf(weights: dict, arch: str, n_head_kv: int):
    """The HF model with ternary gamma*T projections and quantizing hooks."""
    common = dict(
        vocab_size=N_VOCAB,
        hidden_size=N_EMBD,
        intermediate_size=N_FF,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=n_head_kv,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=THETA,
        attention_bias=False,
        bos_token_id=256,
        eos_token_id=257,
    )
    if arch == "llama":
        cfg = transformers.LlamaConfig(hidden_act="silu", tie_word_embeddings=False, **common)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        act = "relu2" if arch == "bitnet-b1.58" else "silu"
        cfg = transformers.BitNetConfig(hidden_act=act, tie_word_embeddings=True, **common)
        model = transformers.BitNetForCausalLM(cfg)
    cfg._attn_implementation = "eager"
    theta = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}
    assert theta["rope_theta"] == THETA
    model = model.float().eval()
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
        if suffix in PROJ:
            t, gamma = absmean_ternarize(arr)
            arr = gamma * t.astype(np.float32)
        state[f"model.layers.{i}.{HF_NAMES[suffix]}.weight"] = arr
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, arr in state.items():
            assert params[key].shape == arr.shape, key
            params[key].copy_(torch.from_numpy(np.ascontiguousarray(arr, np.float32)))
    if arch != "llama":
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1] in HOOKED:
            mod.register_forward_pre_hook(fake_quant_hook)
    return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(tokens[None].astype(np.int64)), use_cache=False)
    return out.logits[0].double().numpy()


def gguf_weights(weights: dict, arch: str, n_head_kv: int) -> dict:
    """The masters as llama.cpp's converter would lay them out (Q/K permuted for llama)."""
    if arch != "llama":
        return weights
    out = dict(weights)
    for name in weights:
        if name.endswith("attn_q.weight"):
            out[name] = permute_qk(weights[name], N_HEAD)
        elif name.endswith("attn_k.weight"):
            out[name] = permute_qk(weights[name], n_head_kv)
    return out


@pytest.mark.parametrize(
    "arch,n_head_kv,qtype",
    [
        ("bitnet-b1.58", 2, "tq2_0"),  # 2B-4T: ReLU^2, sub-norms, GQA 2, tied head
        ("bitnet-b1.58", 1, "i2_s"),  # GQA 4
        ("bitnet", 4, "f32"),  # 1bitLLM: SiLU, sub-norms, MHA
        ("llama", 2, "tq1_0"),  # no sub-norms, untied head, permuted Q/K + normal RoPE
    ],
)
def test_tribit_matches_transformers(tmp_path, arch, n_head_kv, qtype):
    weights = sharp_weights(n_head_kv, sub_norms=arch != "llama")
    hf = build_hf(weights, arch, n_head_kv)
    path = write_model(
        tmp_path / "m.gguf",
        gguf_weights(weights, arch, n_head_kv),
        arch,
        qtype,
        n_head=N_HEAD,
        n_head_kv=n_head_kv,
        rope_theta=THETA,
    )
    tokens = np.random.default_rng(7).integers(0, N_VOCAB, 64)
    want = hf_logits(hf, tokens)
    got = tribit.load(path, kv_type="f32", n_threads=2).logits(tokens)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (arch, kld, top1)
    # the oracle is held to the same independent reference
    oracle = reference.forward(reference.load_reference(path), tokens)
    kld_o, top1_o = kld_top1(want, oracle)
    assert kld_o <= KLD_MAX and top1_o >= TOP1_MIN, (arch, kld_o, top1_o)


def test_unpermuted_llama_file_is_caught(tmp_path):
    """Without the converter's Q/K permutation the llama graph must disagree with HF:
    proof that the comparison above sees RoPE pairing at all."""
    weights = sharp_weights(2, sub_norms=False)
    hf = build_hf(weights, "llama", 2)
    path = write_model(tmp_path / "m.gguf", weights, "llama", "tq2_0", n_head=N_HEAD, n_head_kv=2)
    tokens = np.random.default_rng(7).integers(0, N_VOCAB, 64)
    kld, top1 = kld_top1(hf_logits(hf, tokens), tribit.load(path, kv_type="f32").logits(tokens))
    assert kld > KLD_MAX or top1 < TOP1_MIN, (kld, top1)
