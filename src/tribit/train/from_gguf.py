"""Start training from an exported GGUF file (`tribit train babi --init FILE.gguf`): the
inverse of `export.export_gguf`, to fine-tune a shipped model without its checkpoint.

The file holds each projection as ternary codes `t` and a per-tensor scale `gamma`, not
the latent float weights that training updates. Latent weights `w = t * gamma / f`, where
`f` is the share of nonzero codes, give back exactly that forward: `mean|w| = gamma` and
`round(w / gamma) = round(t / f)` clamps to `t` (f <= 1). Norms and the embedding are
F32 (or F16) in the file and are copied. The optimizer starts fresh.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..formats import GGMLType
from ..formats.gguf_reader import GGUFReader
from ..formats.keys import (
    LLM,
    NORMS,
    OUTPUT_NORM,
    PROJECTIONS,
    TOKEN_EMBD,
    General,
    TokenizerKey,
    arch_key,
    block_tensor,
    scale_key,
)
from ..quant import unpack_tq2_0
from .export import ARCH
from .model import BitNetConfig, BitNetLM


def config_from_metadata(md: dict) -> BitNetConfig:
    """The BitNetConfig of an exported file's hyper-parameter keys."""

    def get(suffix: str) -> object:
        return md[arch_key(ARCH, suffix)]

    return BitNetConfig(
        n_layer=int(get(LLM.BLOCK_COUNT)),
        n_embd=int(get(LLM.EMBEDDING_LENGTH)),
        n_ff=int(get(LLM.FEED_FORWARD_LENGTH)),
        n_head=int(get(LLM.HEAD_COUNT)),
        n_head_kv=int(get(LLM.HEAD_COUNT_KV)),
        n_vocab=int(get(LLM.VOCAB_SIZE)),
        n_ctx=int(get(LLM.CONTEXT_LENGTH)),
        rope_theta=float(get(LLM.ROPE_FREQ_BASE)),
        norm_eps=float(get(LLM.LAYERNORM_RMS_EPS)),
    )


def _latent(t: np.ndarray, gamma: float) -> torch.Tensor:
    """Latent weights whose float64 mean |w| rounds to the float32 `gamma` (as
    `export.ternary_weights` computes it) and that quantize to `t`: magnitude
    c = gamma / f on the nonzero codes, a share of them one ulp larger or smaller so
    that the sum hits `gamma * size` (one ulp of c moves the mean by more than an ulp
    of gamma)."""
    g32 = np.float32(gamma)
    nz = np.flatnonzero(t)
    mag = np.zeros(t.size, np.float32)
    if len(nz):
        target = float(g32) * t.size
        c = np.float32(target / len(nz))
        ulp = float(np.spacing(c))
        k = int(round((target - float(c) * len(nz)) / ulp))
        mag[nz] = c
        mag[nz[: abs(k)]] = np.nextafter(c, np.float32(np.inf) if k > 0 else np.float32(0))
    return torch.from_numpy(t.astype(np.float32) * mag.reshape(t.shape))


def load_gguf(path: str | Path) -> tuple[BitNetLM, dict]:
    """(model, tokenizer metadata) of a file written by `export_gguf`, the model in train
    mode with latent weights that quantize to the file's codes and scales."""
    with GGUFReader(path) as r:
        md = dict(r.metadata)
        if md.get(General.ARCHITECTURE) != ARCH:
            raise ValueError(
                f"{path}: not a file of export_gguf (arch {md.get(General.ARCHITECTURE)!r})"
            )
        cfg = config_from_metadata(md)
        model = BitNetLM(cfg)

        def f32(name: str) -> torch.Tensor:
            a = r.array(name)
            return torch.from_numpy(np.array(a, dtype=np.float32))

        with torch.no_grad():
            emb = r.tensors[TOKEN_EMBD]
            if emb.ggml_type not in (GGMLType.F32, GGMLType.F16):
                raise ValueError(f"{path}: token_embd is {emb.type_name}, not F32/F16")
            model.embed.weight.copy_(f32(TOKEN_EMBD))
            model.norm.weight.copy_(f32(OUTPUT_NORM))
            for i, blk in enumerate(model.blocks):
                for norm in NORMS:  # BitNetLM's block attributes are the norms' suffixes
                    getattr(blk, norm.suffix).weight.copy_(f32(block_tensor(i, norm.suffix)))
                for p in PROJECTIONS:  # ... and the projections' `which`
                    name = block_tensor(i, p.suffix)
                    lin = getattr(blk, p.which)
                    t, _ = unpack_tq2_0(r.raw(name), tuple(lin.weight.shape))
                    lin.weight.copy_(_latent(t, float(md[scale_key(name)])))
    tok = {k: v for k, v in md.items() if k.startswith(TokenizerKey.PREFIX)}
    model.train()
    return model, tok
