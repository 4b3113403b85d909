"""Export a trained BitNetLM to GGUF with tribit's own writer: arch `bitnet-b1.58`,
TQ2_0 projections (mainline llama.cpp reads them) whose exact f32 per-tensor
scales go under `tribit.scale.<tensor name>`, F32 norms, F32 (or F16) token
embedding used as the tied head, and the tokenizer inside (docs/FORMATS.md 3.3, 3.7, 3.8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..formats import GGMLType, GGUFWriter
from ..quant import pack_tq2_0
from .bitlinear import weight_quant
from .model import BitNetLM

ARCH = "bitnet-b1.58"
FILE_TYPE_TQ2_0 = 37  # llama_ftype MOSTLY_TQ2_0
# BitNetLM block attribute -> GGUF tensor name suffix
PROJ = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate",
        "up": "ffn_up", "down": "ffn_down"}
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")


def ternary_weights(model: BitNetLM) -> dict[str, tuple[np.ndarray, np.float32]]:
    """GGUF tensor name -> (t int8, gamma f32) exactly as the forward pass uses them."""
    out = {}
    for i, blk in enumerate(model.blocks):
        for attr, gname in PROJ.items():
            t, gamma = weight_quant(getattr(blk, attr).weight.detach().float(), f64_mean=True)
            out[f"blk.{i}.{gname}.weight"] = (t.numpy().astype(np.int8), np.float32(gamma.item()))
    return out


def export_gguf(model: BitNetLM, tokenizer_md: dict, path: str | Path, name: str = "babi-tiny",
                embd_type: str = "f32", extra_md: dict | None = None) -> Path:
    """Write `model` to `path` as GGUF and return the path.

    `tokenizer_md`: `tokenizer.ggml.*` keys; `embd_type`: "f32" or "f16" for
    token_embd; `extra_md`: more metadata keys (e.g. training provenance).
    """
    if embd_type not in ("f32", "f16"):
        raise ValueError(f"embd_type must be 'f32' or 'f16', got {embd_type!r}")
    c = model.cfg
    c.validate()
    path = Path(path)
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", ARCH)
    w.add_metadata("general.name", name)
    w.add_metadata("general.file_type", FILE_TYPE_TQ2_0)
    w.add_metadata("general.quantization_version", 2)
    p = ARCH + "."
    w.add_metadata(p + "vocab_size", c.n_vocab)
    w.add_metadata(p + "context_length", c.n_ctx)
    w.add_metadata(p + "embedding_length", c.n_embd)
    w.add_metadata(p + "block_count", c.n_layer)
    w.add_metadata(p + "feed_forward_length", c.n_ff)
    w.add_metadata(p + "attention.head_count", c.n_head)
    w.add_metadata(p + "attention.head_count_kv", c.n_head_kv)
    w.add_metadata(p + "attention.layer_norm_rms_epsilon", float(c.norm_eps))
    w.add_metadata(p + "rope.dimension_count", c.head_dim)
    w.add_metadata(p + "rope.freq_base", float(c.rope_theta))
    for k, v in tokenizer_md.items():
        w.add_metadata(k, v)
    for k, v in (extra_md or {}).items():
        w.add_metadata(k, v)

    def f32(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32)

    emb = f32(model.embed.weight)
    if embd_type == "f16":
        w.add_tensor("token_embd.weight", emb.shape, GGMLType.F16, emb.astype(np.float16))
    else:
        w.add_tensor("token_embd.weight", emb.shape, GGMLType.F32, emb)
    tern = ternary_weights(model)
    for i, blk in enumerate(model.blocks):
        for attr in NORMS:
            norm = f32(getattr(blk, attr).weight)
            w.add_tensor(f"blk.{i}.{attr}.weight", norm.shape, GGMLType.F32, norm)
        for gname in PROJ.values():
            tname = f"blk.{i}.{gname}.weight"
            t, gamma = tern[tname]
            w.add_metadata("tribit.scale." + tname, float(gamma))
            w.add_tensor(tname, t.shape, GGMLType.TQ2_0,
                         lambda t=t, g=gamma: pack_tq2_0(t, g))
    w.add_tensor("output_norm.weight", (c.n_embd,), GGMLType.F32, f32(model.norm.weight))
    w.write()
    return path
