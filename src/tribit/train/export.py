"""Export a trained BitNetLM to GGUF through the converters' writer (`convert.write_gguf`):
arch `bitnet-b1.58`, TQ2_0 projections (mainline llama.cpp reads them) whose exact f32
per-tensor scales go under `tribit.scale.<tensor name>`, F32 norms, F32 (or F16) token
embedding used as the tied head, and the tokenizer inside (docs/FORMATS.md 3.3, 3.7, 3.8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..convert.families import HParams, gguf_hparams
from ..convert.writer import ModelPlan, TensorPlan, write_gguf
from ..formats.keys import (
    NORMS,
    OUTPUT_NORM,
    PROJECTIONS,
    TOKEN_EMBD,
    Arch,
    Tribit,
    block_tensor,
)
from .bitlinear import weight_quant
from .model import BitNetLM

ARCH = Arch.BITNET_B158


def ternary_weights(model: BitNetLM) -> dict[str, tuple[np.ndarray, np.float32]]:
    """GGUF tensor name -> (t int8, gamma f32) exactly as the forward pass uses them."""
    out = {}
    for i, blk in enumerate(model.blocks):
        for p in PROJECTIONS:  # BitNetLM's block attributes are the projections' `which`
            t, gamma = weight_quant(getattr(blk, p.which).weight.detach().float(), f64_mean=True)
            out[block_tensor(i, p.suffix)] = (t.numpy().astype(np.int8), np.float32(gamma.item()))
    return out


def provenance(steps: int, seed: int) -> dict[str, int]:
    """The training provenance keys `export_gguf(extra_md=...)` records."""
    return {Tribit.TRAIN_STEPS: steps, Tribit.TRAIN_SEED: seed}


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().numpy(), dtype=np.float32)


def export_plan(
    model: BitNetLM, tokenizer_md: dict, name: str = "babi-tiny", extra_md: dict | None = None
) -> ModelPlan:
    """`model` as the writer's `ModelPlan`: token_embd, then per block its four norms (the
    block's attribute names are the norms' GGUF suffixes) and seven projections, then
    output_norm."""
    c = model.cfg
    c.validate()

    def norm(name: str, w: torch.Tensor) -> TensorPlan:
        x = _f32(w)
        return TensorPlan(name, x.shape, "norm", load=lambda: x)

    emb = _f32(model.embed.weight)
    tensors = [TensorPlan(TOKEN_EMBD, emb.shape, "embd", load=lambda: emb)]
    tern = ternary_weights(model)
    for i, blk in enumerate(model.blocks):
        tensors += [norm(block_tensor(i, n.suffix), getattr(blk, n.suffix).weight) for n in NORMS]
        for p in PROJECTIONS:
            tname = block_tensor(i, p.suffix)
            t, gamma = tern[tname]
            tensors.append(
                TensorPlan(
                    tname, t.shape, "ternary", load_ternary=lambda t=t, g=gamma: (t, g), gamma=gamma
                )
            )
    tensors.append(norm(OUTPUT_NORM, model.norm.weight))
    hp = HParams(
        n_embd=c.n_embd,
        n_ff=c.n_ff,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_head_kv=c.n_head_kv,
        head_dim=c.head_dim,
        n_ctx_train=c.n_ctx,
        rope_theta=float(c.rope_theta),
        norm_eps=float(c.norm_eps),
        tied=True,
        rope_scaling=None,
    )
    return ModelPlan(
        arch=ARCH,
        name=name,
        hparams=gguf_hparams(hp, c.n_vocab, ARCH),
        tensors=tensors,
        tokenizer=dict(tokenizer_md),
        metadata=dict(extra_md or {}),
    )


def export_gguf(
    model: BitNetLM,
    tokenizer_md: dict,
    path: str | Path,
    name: str = "babi-tiny",
    embd_type: str = "f32",
    extra_md: dict | None = None,
) -> Path:
    """Write `model` to `path` as GGUF and return the path.

    `tokenizer_md`: `tokenizer.ggml.*` keys; `embd_type`: "f32" or "f16" for
    token_embd; `extra_md`: more metadata keys (e.g. training provenance).
    """
    if embd_type not in ("f32", "f16"):
        raise ValueError(f"embd_type must be 'f32' or 'f16', got {embd_type!r}")
    plan = export_plan(model, tokenizer_md, name, extra_md)
    return write_gguf(plan, path, qtype="tq2_0", head=embd_type, progress=False).path
