"""Tiny random BitNet models written to GGUF with tribit's writer, in every layout.

Well-conditioned by construction (masters of std 0.02, embeddings of std 0.1):
with these, two correct float implementations agree to KLD <= 5e-4 while a
one-op bug gives KLD ~0.4 (the model-runtime issue's measurements).
"""

from __future__ import annotations

import numpy as np

from tribit.formats import GGMLType, GGUFReader, GGUFWriter
from tribit.quant import (
    absmean_ternarize,
    f32_to_bf16,
    lowbit,
    pack_i2s,
    pack_tq1_0,
    pack_tq2_0,
    quantize_q6_k,
    quantize_q8_0,
)

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
BOS, EOS, EOT = 256, 257, 258  # the specials' ids in byte_tokenizer_metadata


def _bytes_to_unicode() -> dict[int, str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_tokenizer_metadata(n_vocab: int) -> dict:
    """A gpt2-model vocabulary of the 256 bytes, three specials and padding."""
    b2u = _bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)] + SPECIALS
    types = [1] * 256 + [3] * len(SPECIALS)
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab must be >= {len(tokens)}")
    for i in range(n_vocab - len(tokens)):
        tokens.append(f"<|reserved_{i}|>")
        types.append(5)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.merges": [],
        "tokenizer.ggml.bos_token_id": 256,
        "tokenizer.ggml.eos_token_id": 257,
        "tokenizer.ggml.eot_token_id": 258,
        "tokenizer.ggml.add_bos_token": True,
    }


def random_weights(
    n_embd,
    n_ff,
    n_layer,
    n_head,
    n_head_kv,
    n_vocab,
    seed=0,
    sub_norms=True,
    tied=True,
    head_dim=None,
    qk_norm=False,
    norm_in=False,
):
    """Float weights of a tiny model: dict name -> float32 array (masters, not ternary).

    head_dim: per-head width (default n_embd // n_head); qk_norm: Qwen3's per-head q/k
    norms; norm_in: BitNet-embedding's input norm on every projection."""
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    qdim, kvdim = n_head * hd, n_head_kv * hd
    w = {
        "token_embd.weight": (rng.standard_normal((n_vocab, n_embd)) * 0.1).astype(np.float32),
        "output_norm.weight": (1 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32),
    }
    if not tied:
        w["output.weight"] = (rng.standard_normal((n_vocab, n_embd)) * 0.1).astype(np.float32)
    for i in range(n_layer):
        b = f"blk.{i}."
        shapes = {
            "attn_q": (qdim, n_embd),
            "attn_k": (kvdim, n_embd),
            "attn_v": (kvdim, n_embd),
            "attn_output": (n_embd, qdim),
            "ffn_gate": (n_ff, n_embd),
            "ffn_up": (n_ff, n_embd),
            "ffn_down": (n_embd, n_ff),
        }
        for name, shape in shapes.items():
            w[b + name + ".weight"] = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        norms = {"attn_norm": n_embd, "ffn_norm": n_embd}
        if sub_norms:
            norms.update(attn_sub_norm=qdim, ffn_sub_norm=n_ff)
        if qk_norm:
            norms.update(attn_q_norm=hd, attn_k_norm=hd)
        if norm_in:
            for name, shape in shapes.items():
                norms[name + "_norm_in"] = shape[1]
        for name, d in norms.items():
            w[b + name + ".weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    return w


LOWBIT = {
    "q2_0": (GGMLType.Q2_0, lowbit.quantize_row_q2_0_ref),
    "q1_0": (GGMLType.Q1_0, lowbit.quantize_row_q1_0_ref),
}
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def write_model(
    path,
    weights: dict,
    arch="bitnet-b1.58",
    qtype="tq2_0",
    emb_type="f32",
    n_head=4,
    n_head_kv=2,
    ctx=256,
    rope_theta=10000.0,
    extra_md=None,
    eps=1e-5,
    norm_type="f32",
):
    """Write `weights` (float masters) as a GGUF model; projections ternarized (absmean).

    The head dimension is read off attn_q's rows; when it is not n_embd / n_head (Qwen3)
    `attention.key_length`/`value_length` say it. norm_type "f16" stores the norms as
    bitnet.cpp's embedding converter does."""
    n_vocab, n_embd = weights["token_embd.weight"].shape
    n_layer = sum(1 for k in weights if k.endswith(".attn_norm.weight"))
    n_ff = weights["blk.0.ffn_gate.weight"].shape[0]
    head_dim = weights["blk.0.attn_q.weight"].shape[0] // n_head
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", arch)
    w.add_metadata("general.name", "tiny")
    p = arch + "."
    w.add_metadata(p + "context_length", ctx)
    w.add_metadata(p + "embedding_length", n_embd)
    w.add_metadata(p + "block_count", n_layer)
    w.add_metadata(p + "feed_forward_length", n_ff)
    w.add_metadata(p + "attention.head_count", n_head)
    w.add_metadata(p + "attention.head_count_kv", n_head_kv)
    w.add_metadata(p + "attention.layer_norm_rms_epsilon", eps)
    w.add_metadata(p + "rope.freq_base", rope_theta)
    w.add_metadata(p + "rope.dimension_count", head_dim)
    if head_dim * n_head != n_embd or arch == "qwen3":
        w.add_metadata(p + "attention.key_length", head_dim)
        w.add_metadata(p + "attention.value_length", head_dim)
    w.add_metadata(p + "vocab_size", n_vocab)
    for k, v in byte_tokenizer_metadata(n_vocab).items():
        w.add_metadata(k, v)
    for k, v in (extra_md or {}).items():
        w.add_metadata(k, v)
    for name, arr in weights.items():
        if any(name.endswith(pj + ".weight") for pj in PROJ) and qtype in LOWBIT:
            _add_float(w, name, arr, qtype)  # group scales from the masters, as Bonsai's
        elif any(name.endswith(pj + ".weight") for pj in PROJ):
            t, gamma = absmean_ternarize(arr)
            if qtype in ("tq1_0", "tq2_0"):
                w.add_metadata("tribit.scale." + name, float(gamma))
            _add_ternary(w, name, t, gamma, qtype)
        elif name in ("token_embd.weight", "output.weight"):
            _add_float(w, name, arr, emb_type)
        else:
            _add_float(w, name, arr, norm_type)
    w.write()
    return path


def _add_ternary(w, name, t, gamma, qtype):
    if qtype == "tq2_0":
        w.add_tensor(name, t.shape, GGMLType.TQ2_0, pack_tq2_0(t, gamma))
    elif qtype == "tq1_0":
        w.add_tensor(name, t.shape, GGMLType.TQ1_0, pack_tq1_0(t, gamma))
    elif qtype == "i2_s":
        w.add_tensor(name, t.shape, GGMLType.I2_S, pack_i2s(t, gamma))
    elif qtype == "f32":  # folded gamma * t, as mainline's F32 conversion stores it
        w.add_tensor(name, t.shape, GGMLType.F32, (gamma * t).astype(np.float32))
    elif qtype == "f32-master":  # float masters: ternarized with absmean at load
        raise ValueError("use write_masters for master weights")
    else:
        raise ValueError(qtype)


def _add_float(w, name, arr, kind):
    if kind == "f32":
        w.add_tensor(name, arr.shape, GGMLType.F32, arr)
    elif kind == "f16":
        w.add_tensor(name, arr.shape, GGMLType.F16, arr.astype(np.float16))
    elif kind == "bf16":
        w.add_tensor(name, arr.shape, GGMLType.BF16, f32_to_bf16(arr))
    elif kind == "q8_0":
        w.add_tensor(name, arr.shape, GGMLType.Q8_0, quantize_q8_0(arr))
    elif kind == "q6_k":  # as bitnet.cpp's --quant-embd writes it
        w.add_tensor(name, arr.shape, GGMLType.Q6_K, quantize_q6_k(arr))
    elif kind in LOWBIT:  # llama.cpp's reference quantizers
        w.add_tensor(name, arr.shape, LOWBIT[kind][0], LOWBIT[kind][1](arr))
    else:
        raise ValueError(kind)


def tiny_model(
    path,
    arch="bitnet-b1.58",
    qtype="tq2_0",
    n_embd=256,
    n_ff=512,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    n_vocab=300,
    seed=0,
    emb_type="f32",
    ctx=256,
):
    """One call: random weights of the given shape written in one layout."""
    sub = arch != "llama"
    tied = arch != "llama"
    wts = random_weights(n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, seed, sub, tied)
    return write_model(path, wts, arch, qtype, emb_type, n_head, n_head_kv, ctx)


def qwen3_weights(
    n_embd=256,
    n_ff=512,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    n_vocab=300,
    seed=0,
    tied=True,
    head_dim=None,
    norm_in=False,
) -> dict:
    """Float masters of a tiny Qwen3 model, sharpened as sharp_models does for the other
    archs: v/o and gate/up masters x4 and q/k norm weights x2, so that attention and the
    FFN move the logits (a wrong q/k norm or RoPE gives KLD >> the test bounds)."""
    w = random_weights(
        n_embd,
        n_ff,
        n_layer,
        n_head,
        n_head_kv,
        n_vocab,
        seed,
        sub_norms=False,
        tied=tied,
        head_dim=head_dim,
        qk_norm=True,
        norm_in=norm_in,
    )
    for name in w:
        if any(f".{s}." in name for s in ("attn_v", "attn_output", "ffn_gate", "ffn_up")):
            w[name] = w[name] * 4
        if ".attn_q_norm." in name or ".attn_k_norm." in name:
            w[name] = w[name] * 2
    return w


def qwen3_model(
    path,
    qtype="i2_s",
    n_embd=256,
    n_ff=512,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    head_dim=None,
    n_vocab=300,
    seed=0,
    norm_in=False,
    tied=True,
    emb_type="f32",
    ctx=256,
    extra_md=None,
):
    """A tiny random Qwen3 model (q/k norms, SwiGLU, NeoX RoPE theta 1e6, eps 1e-6);
    with `norm_in`, BitNet-embedding's per-projection input norms (and F16 norms, as
    bitnet.cpp's embedding converter writes them)."""
    wts = qwen3_weights(
        n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, seed, tied, head_dim, norm_in
    )
    return write_model(
        path,
        wts,
        "qwen3",
        qtype,
        emb_type,
        n_head,
        n_head_kv,
        ctx,
        rope_theta=1e6,
        eps=1e-6,
        extra_md=extra_md,
        norm_type="f16" if norm_in else "f32",
    )


def kld_top1(ref_logits: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Mean KL(ref || test) over positions and top-1 agreement."""

    def logsoftmax(z):
        z = z.astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    lp, lq = logsoftmax(ref_logits), logsoftmax(logits)
    kld = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))
    top1 = float(np.mean(ref_logits.argmax(-1) == logits.argmax(-1)))
    return kld, top1


def rewrite(src, dst, set_md=None, drop_md=(), drop_tensors=(), md_types=None):
    """Copy a GGUF file with metadata changed and tensors dropped (a hostile variant)."""
    r = GGUFReader(src)
    w = GGUFWriter(dst)
    set_md = dict(set_md or {})
    for k, v in r.metadata.items():
        if k in drop_md:
            continue
        if k in set_md:
            w.add_metadata(k, set_md.pop(k), (md_types or {}).get(k))
        elif isinstance(v, (list, tuple, np.ndarray)):
            w.add_metadata(k, v)
        else:
            w.add_metadata(k, v, r.metadata_types[k])
    for k, v in set_md.items():
        w.add_metadata(k, v, (md_types or {}).get(k))
    for name, ti in r.tensors.items():
        if name not in drop_tensors:
            w.add_tensor(name, ti.shape, ti.ggml_type, np.array(r.raw(name)))
    w.write()
    return dst


def write_tiny(path, seed=0, ctx=256, n_layer=2, extra_md=None):
    """The tests' standard tiny model at `path`: n_embd 256, n_ff 256, 4 heads (2 KV),
    n_vocab 300 (byte-level vocabulary), random ternary weights of `seed`."""
    weights = random_weights(256, 256, n_layer, 4, 2, 300, seed=seed)
    return write_model(path, weights, n_head=4, n_head_kv=2, ctx=ctx, extra_md=extra_md)


def ascii_only(tokens, logits):
    """A logits processor keeping printable ASCII bytes and the end tokens: readable,
    valid UTF-8 text from a random byte-level model."""
    out = np.full_like(logits, -np.inf)
    out[32:127] = logits[32:127]
    out[[EOS, EOT]] = logits[[EOS, EOT]]
    return out
