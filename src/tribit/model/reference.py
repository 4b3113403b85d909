"""The oracle: a plain numpy forward of exactly tribit's math, top to bottom.

Float64 everywhere except where quantization is defined: the activations
feeding each BitLinear are rounded to float32 and quantized per token with
`tribit.quant.quantize_activations`, and the ternary product uses the exact
epilogue `ternary_matmul_ref`. Slow and simple on purpose; for tiny models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import GGUFReader
from ..formats.keys import (
    ATTN_K_NORM,
    ATTN_NORM,
    ATTN_Q_NORM,
    ATTN_SUB_NORM,
    FFN_NORM,
    FFN_SUB_NORM,
    OUTPUT,
    OUTPUT_NORM,
    PROJECTIONS,
    TOKEN_EMBD,
    block_tensor,
)
from ..quant import (
    dequantize_q8_k,
    lowbit,
    quantize_activations,
    quantize_q8_k,
    ternary_matmul_ref,
)
from .config import ModelConfig, config_from_metadata
from .weights import (
    GroupWeight,
    block_norms,
    dims,
    float_matrix_f32,
    input_norms,
    read_f32,
    read_float_matrix,
    read_norm,
    read_projection,
    repack_float_matrix,
)


@dataclass
class ReferenceWeights:
    config: ModelConfig
    tok_embd: np.ndarray  # (n_vocab, n_embd) float64
    output: np.ndarray | GroupWeight  # head, (n_vocab, n_embd); Q2_0 / Q1_0 as blocks
    output_norm: np.ndarray
    # per layer: norms by GGUF suffix (float64, or None where absent), projections by
    # `which` ((t, gamma) or GroupWeight), and "norm_in": `which` -> float64 input norm
    layers: list[dict]
    group_mode: str = "llama"  # how Q2_0 / Q1_0 matrices compute (docs/FORMATS.md 3.11)
    # a Q6_K head: the runtime multiplies it by the final-norm rows quantized to q8_K
    # (docs/KERNELS.md "Q6_K head"), and so does the oracle
    head_q8_k: bool = False


def load_reference(
    path, n_ctx: int | None = None, head_type: str | None = None, group_mode: str = "llama"
) -> ReferenceWeights:
    """Read a GGUF file into the oracle's weights (every tensor in memory).

    head_type: as tribit.load's, with the numpy quantizers (the spec): the oracle then
    runs on the dequantized head the runtime repacked."""
    r = GGUFReader(path)
    n_vocab, n_embd = r.tensors[TOKEN_EMBD].shape
    cfg = config_from_metadata(r.metadata, n_vocab, OUTPUT in r.tensors, n_ctx)
    shape = (n_vocab, n_embd)

    qtypes = {}

    def head(name: str) -> np.ndarray:
        raw, qt = read_float_matrix(r, name, shape)
        raw, qt = repack_float_matrix(raw, qt, shape, head_type, name)
        qtypes[name] = qt
        return float_matrix_f32(raw, qt, shape).astype(np.float64)

    def group_head(name: str):
        raw, qt = read_float_matrix(r, name, shape)
        return GroupWeight(raw, qt, shape, qt.upper()) if qt in lowbit.BLOCK_VALUES else None

    emb = head(TOKEN_EMBD)
    head_name = TOKEN_EMBD
    out = group_head(TOKEN_EMBD) or emb
    if not cfg.tied_head:
        head_name = OUTPUT
        out = group_head(OUTPUT) or head(OUTPUT)
    d = dims(cfg)
    layers = []
    for i in range(cfg.n_layer):
        # norms by GGUF suffix (None: the arch has none), projections by `which`
        layer = {n.suffix: None for n in (ATTN_SUB_NORM, FFN_SUB_NORM, ATTN_Q_NORM, ATTN_K_NORM)}
        for n in block_norms(cfg):
            layer[n.suffix] = read_norm(r, i, n, d).astype(np.float64)
        layer["norm_in"] = {k: v.astype(np.float64) for k, v in input_norms(r, i, d).items()}
        for p in PROJECTIONS:
            w = read_projection(r, block_tensor(i, p.suffix), p.shape(d))
            layer[p.which] = w if isinstance(w, GroupWeight) else (w.t, w.gamma)
        layers.append(layer)
    norm = read_f32(r, OUTPUT_NORM, (n_embd,)).astype(np.float64)
    return ReferenceWeights(
        cfg, emb, out, norm, layers, group_mode, head_q8_k=qtypes.get(head_name) == "q6_k"
    )


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def group_linear(x: np.ndarray, g: GroupWeight, mode: str) -> np.ndarray:
    """A Q2_0 / Q1_0 matrix in mode (a) "llama" or (b) "float" (quant/lowbit.py)."""
    x32 = x.astype(np.float32)
    if mode == "float":
        return lowbit.matmul_f32(g.raw, g.shape, g.qtype, x32).astype(np.float64)
    q, d = lowbit.quantize_act_q8_0(x32)
    return lowbit.matmul_q8(g.raw, g.shape, g.qtype, q, d).astype(np.float64)


def bitlinear(x: np.ndarray, tw, mode: str = "llama") -> np.ndarray:
    """The lossless BitLinear: int8 per-token activations, exact integer sums (a Q2_0 /
    Q1_0 projection: `group_linear`)."""
    if isinstance(tw, GroupWeight):
        return group_linear(x, tw, mode)
    t, gamma = tw
    q, scale, _ = quantize_activations(x.astype(np.float32))
    return ternary_matmul_ref(t, gamma, q, scale).astype(np.float64)


def rope(x: np.ndarray, pos: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """x (n, heads, head_dim) rotated at positions pos (n,)."""
    half = cfg.n_rot // 2
    inv = cfg.rope_theta ** (-2.0 * np.arange(half) / cfg.n_rot)
    ang = pos[:, None].astype(np.float64) * inv[None, :]  # (n, half)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    if cfg.rope_type == "neox":
        a, b = x[..., :half], x[..., half : 2 * half]
        out[..., :half] = a * c - b * s
        out[..., half : 2 * half] = a * s + b * c
    else:
        a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        out[..., 0 : 2 * half : 2] = a * c - b * s
        out[..., 1 : 2 * half : 2] = a * s + b * c
    return out


def forward(
    w: ReferenceWeights, tokens, act=None, hidden: bool = False, codes: list | None = None
) -> np.ndarray:
    """Logits (n, n_vocab) float64 of every position of one sequence from scratch; with
    `hidden`, the final-norm hidden states (n, n_embd) instead (what embeddings pool).

    `act` overrides the FFN activation (tests use it to build a deliberately
    wrong model). `codes`, a list, receives (layer, which, int8 codes (n, K)) of every
    BitLinear's quantized input, in execution order.
    """
    cfg = w.config
    tokens = np.asarray(tokens)
    n, hd = tokens.size, cfg.head_dim
    pos = np.arange(n)
    x = w.tok_embd[tokens]
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    group = cfg.n_head // cfg.n_head_kv
    gm = w.group_mode
    if act is None:
        act = (
            (lambda g: np.maximum(g, 0) ** 2)
            if cfg.act == "relu2"
            else (lambda g: g / (1 + np.exp(-g)))
        )
    for li, L in enumerate(w.layers):

        def proj(x, which, L=L, li=li):
            # the optional input norm of the projection, then the BitLinear
            if which in L["norm_in"]:
                x = rmsnorm(x, L["norm_in"][which], cfg.norm_eps)
            if codes is not None:
                codes.append((li, which, quantize_activations(x.astype(np.float32))[0]))
            return bitlinear(x, L[which], gm)

        h = rmsnorm(x, L[ATTN_NORM.suffix], cfg.norm_eps)
        q = proj(h, "q").reshape(n, cfg.n_head, hd)
        k = proj(h, "k").reshape(n, cfg.n_head_kv, hd)
        v = proj(h, "v").reshape(n, cfg.n_head_kv, hd)
        if L[ATTN_Q_NORM.suffix] is not None:  # Qwen3: per-head norms before RoPE
            q = rmsnorm(q, L[ATTN_Q_NORM.suffix], cfg.norm_eps)
            k = rmsnorm(k, L[ATTN_K_NORM.suffix], cfg.norm_eps)
        q, k = rope(q, pos, cfg), rope(k, pos, cfg)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # GQA
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        a = np.einsum("hqk,khd->qhd", p, v).reshape(n, cfg.n_head * hd)
        if L[ATTN_SUB_NORM.suffix] is not None:
            a = rmsnorm(a, L[ATTN_SUB_NORM.suffix], cfg.norm_eps)
        x = x + proj(a, "o")
        h = rmsnorm(x, L[FFN_NORM.suffix], cfg.norm_eps)
        f = act(proj(h, "gate")) * proj(h, "up")
        if L[FFN_SUB_NORM.suffix] is not None:
            f = rmsnorm(f, L[FFN_SUB_NORM.suffix], cfg.norm_eps)
        x = x + proj(f, "down")
    out = rmsnorm(x, w.output_norm, cfg.norm_eps)
    if hidden:
        return out
    if isinstance(w.output, GroupWeight):
        return group_linear(out, w.output, w.group_mode)
    if w.head_q8_k:
        out = dequantize_q8_k(quantize_q8_k(out.astype(np.float32))).astype(np.float64)
    return out @ w.output.T
