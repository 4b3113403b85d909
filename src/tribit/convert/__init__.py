"""Conversion to GGUF: Hugging Face checkpoints, hub downloads and dummy layouts.

    from tribit.convert import convert_hf, write_dummy
    convert_hf("bitnet-b1.58-2B-4T/", "model.gguf", qtype="tq2_0", head="f16")
    write_dummy("2B-4T", "dummy.gguf", qtype="tq2_0", seed=0)

See docs/CONVERSION.md for the families, storage types and fall-backs.
"""

from __future__ import annotations

from pathlib import Path

from tribit.errors import FormatError
from tribit.formats.keys import TokenizerKey, TokenType

from .writer import (
    DEFAULT_QTYPE,
    HEAD_TYPES,
    QTYPES,
    ModelPlan,
    TensorPlan,
    WriteReport,
    write_gguf,
)

__all__ = [
    "DEFAULT_QTYPE",
    "HEAD_TYPES",
    "QTYPES",
    "ModelPlan",
    "TensorPlan",
    "WriteReport",
    "convert_hf",
    "pad_vocab",
    "write_dummy",
    "write_gguf",
]


def pad_vocab(tokenizer: dict[str, object], n_vocab: int) -> dict[str, object]:
    """Pad the token list (and scores/types) of tokenizer metadata to `n_vocab` rows with
    `[PAD<id>]` UNUSED tokens, as llama.cpp's converter does; FormatError if it is longer."""
    tokens = list(tokenizer.get(TokenizerKey.TOKENS) or [])
    if not tokens:
        raise FormatError(f"tokenizer metadata has no {TokenizerKey.TOKENS}")
    if len(tokens) > n_vocab:
        raise FormatError(
            f"tokenizer has {len(tokens)} tokens but the embedding only {n_vocab} rows"
        )
    if len(tokens) == n_vocab:
        return tokenizer
    import numpy as np

    n_pad = n_vocab - len(tokens)
    out = dict(tokenizer)
    out[TokenizerKey.TOKENS] = tokens + [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    if TokenizerKey.SCORES in out:
        scores = np.asarray(out[TokenizerKey.SCORES], dtype=np.float32)
        out[TokenizerKey.SCORES] = np.concatenate([scores, np.full(n_pad, -1000.0, np.float32)])
    if TokenizerKey.TOKEN_TYPE in out:
        types = np.asarray(out[TokenizerKey.TOKEN_TYPE], dtype=np.int32)
        pad = np.full(n_pad, TokenType.UNUSED, np.int32)
        out[TokenizerKey.TOKEN_TYPE] = np.concatenate([types, pad])
    return out


def convert_hf(
    hf_dir: str | Path,
    out: str | Path,
    qtype: str = DEFAULT_QTYPE,
    head: str = "f16",
    name: str | None = None,
    progress: bool = True,
) -> WriteReport:
    """Convert a Hugging Face checkpoint directory (safetensors, single or sharded) to GGUF.

    The family is detected from config.json (docs/FORMATS.md §2); unsupported models raise
    FormatError listing what is supported. Tensors are read and written one at a time.
    """
    from tribit.tokenizer.hf import tokenizer_metadata_from_hf

    from .families import build_plan, finish_tokenizer
    from .hf import Checkpoint

    hf_dir = Path(hf_dir)
    ckpt = Checkpoint(hf_dir)
    if name is None:
        src = ckpt.config.get("_name_or_path") or hf_dir.resolve().name
        name = Path(str(src)).name or "model"
    plan = build_plan(ckpt, {}, name)
    n_vocab = plan.tensors[0].shape[0]
    plan.tokenizer = finish_tokenizer(ckpt, pad_vocab(tokenizer_metadata_from_hf(hf_dir), n_vocab))
    return write_gguf(plan, out, qtype=qtype, head=head, progress=progress)


def write_dummy(
    layout: str,
    out: str | Path,
    qtype: str | None = None,
    seed: int = 0,
    head: str | None = None,
    progress: bool = True,
) -> WriteReport:
    """Write a random ternary model in a named layout (see `tribit.convert.layouts.LAYOUTS`).

    `qtype` / `head` None: the layout's storage (Bonsai: q2_0 for every matrix), else tq2_0 /
    f16."""
    from .dummy import dummy_plan
    from .layouts import get_layout

    lay = get_layout(layout)
    return write_gguf(
        dummy_plan(lay, seed=seed),
        out,
        qtype=qtype or lay.qtype or DEFAULT_QTYPE,
        head=head or lay.head or "f16",
        progress=progress,
    )
