"""Model configuration, read from GGUF metadata only (docs/FORMATS.md 3.3)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ContextWarning, ModelError
from ..formats.keys import (
    LLM,
    QK_NORM_ARCHS,
    SUB_NORM_ARCHS,
    Arch,
    General,
    PoolingType,
    Prism,
    arch_key,
)

# arch -> (FFN activation, RoPE pairing, logits always from tok_embd); sub-norms: the table's
ARCHS: dict[str, tuple[str, str, bool]] = {
    Arch.BITNET: ("silu", "neox", True),
    Arch.BITNET_25: ("relu2", "neox", True),
    Arch.BITNET_B158: ("relu2", "neox", True),
    Arch.LLAMA: ("silu", "normal", False),
    Arch.QWEN3: ("silu", "neox", False),
}

# `<arch>.pooling_type` values -> tribit's names (rank: a reranker's score; not an embedding)
POOLING_NAMES = {
    PoolingType.NONE: "none",
    PoolingType.MEAN: "mean",
    PoolingType.CLS: "cls",
    PoolingType.LAST: "last",
    PoolingType.RANK: "rank",
}


# Hard limits on hyper-parameters from metadata (far above any real model, low enough that
# every size computed from them fits in 64 bits and the checks below are meaningful)
MAX_EMBD = 1 << 20
MAX_FF = 1 << 22
MAX_LAYER = 1 << 12
MAX_HEAD = 1 << 14
# positions cross into the native core as int32
MAX_CTX = (1 << 31) - 1


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a loaded model, in tribit's shared vocabulary."""

    arch: str
    name: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    n_vocab: int
    n_ctx: int
    n_ctx_train: int
    rope_theta: float
    rope_type: str  # "neox" | "normal"
    norm_eps: float
    act: str  # "relu2" | "silu"
    sub_norms: bool
    tied_head: bool
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (Qwen3)
    # the file's pooling for embeddings ("mean", "cls", "last", "none", "rank"); None: the
    # file defines none (a generative model)
    pooling: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(md: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    if key not in md:
        if default is None:
            raise ModelError(f"missing metadata key {key!r}")
        return default
    v = md[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise ModelError(f"metadata {key!r} must be an integer, got {v!r}")
    if kind is float and not isinstance(v, (int, float)):
        raise ModelError(f"metadata {key!r} must be a number, got {v!r}")
    return kind(v)


def config_from_metadata(
    md: dict[str, Any], n_vocab: int, has_output: bool, n_ctx: int | None = None
) -> ModelConfig:
    """Build and validate the configuration of a GGUF file's model."""
    refuse_rotated(md)
    arch = md.get(General.ARCHITECTURE)
    if arch not in ARCHS:
        raise ModelError(
            f"unsupported architecture {arch!r}; tribit runs {', '.join(sorted(ARCHS))}"
        )
    act, rope_type, always_tied = ARCHS[arch]
    sub_norms = arch in SUB_NORM_ARCHS

    def key(suffix: str) -> str:
        return arch_key(arch, suffix)

    n_embd = _get(md, key(LLM.EMBEDDING_LENGTH), int)
    n_head = _get(md, key(LLM.HEAD_COUNT), int)
    n_head_kv = _get(md, key(LLM.HEAD_COUNT_KV), int, n_head)
    n_layer = _get(md, key(LLM.BLOCK_COUNT), int)
    n_ff = _get(md, key(LLM.FEED_FORWARD_LENGTH), int)
    for suffix, v, hi in [
        (LLM.EMBEDDING_LENGTH, n_embd, MAX_EMBD),
        (LLM.HEAD_COUNT, n_head, MAX_HEAD),
        (LLM.HEAD_COUNT_KV, n_head_kv, MAX_HEAD),
        (LLM.BLOCK_COUNT, n_layer, MAX_LAYER),
        (LLM.FEED_FORWARD_LENGTH, n_ff, MAX_FF),
    ]:
        if v <= 0:
            raise ModelError(f"metadata {key(suffix)!r} must be positive, got {v}")
        if v > hi:
            raise ModelError(f"metadata {key(suffix)!r} = {v} is above tribit's limit of {hi}")
    if n_head % n_head_kv:
        raise ModelError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    # head_dim is attention.key_length where the file says it (Qwen3 0.6B: 128, not
    # n_embd / n_head = 64), else n_embd / n_head
    if key(LLM.KEY_LENGTH) in md:
        head_dim = _get(md, key(LLM.KEY_LENGTH), int)
        if not 0 < head_dim <= MAX_EMBD:
            raise ModelError(f"metadata {key(LLM.KEY_LENGTH)!r} = {head_dim} is out of range")
        v_len = _get(md, key(LLM.VALUE_LENGTH), int, head_dim)
        if v_len != head_dim:
            raise ModelError(
                f"attention.value_length {v_len} differs from key_length "
                f"{head_dim}; tribit needs them equal"
            )
    else:
        if n_embd % n_head:
            raise ModelError(f"embedding_length {n_embd} is not a multiple of head_count {n_head}")
        head_dim = n_embd // n_head
    n_rot = _get(md, key(LLM.ROPE_DIMENSION_COUNT), int, head_dim)
    if n_rot <= 0 or n_rot > head_dim or n_rot % 2:
        raise ModelError(f"rope.dimension_count {n_rot} must be even and <= head_dim {head_dim}")
    n_ctx_train = _get(md, key(LLM.CONTEXT_LENGTH), int, 2048)
    if n_ctx_train <= 0:
        raise ModelError(
            f"metadata {key(LLM.CONTEXT_LENGTH)!r} must be positive, got {n_ctx_train}"
        )
    eps = _get(md, key(LLM.LAYERNORM_RMS_EPS), float)
    if not 0 < eps < 1:
        raise ModelError(f"layer_norm_rms_epsilon {eps} is out of range")
    theta = _get(md, key(LLM.ROPE_FREQ_BASE), float, 10000.0)
    if not theta > 0:
        raise ModelError(f"rope.freq_base {theta} must be positive")
    md_vocab = md.get(key(LLM.VOCAB_SIZE))
    if md_vocab is not None and md_vocab != n_vocab:
        raise ModelError(f"vocab_size {md_vocab} does not match token_embd's {n_vocab} rows")
    if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int)):
        raise ModelError(f"n_ctx must be an integer, got {n_ctx!r}")
    ctx = n_ctx if n_ctx is not None else min(n_ctx_train, 4096)
    check_ctx(ctx)
    if ctx > n_ctx_train:
        warnings.warn(
            f"n_ctx {ctx} is above the model's trained context ({n_ctx_train}): positions past "
            "it were never trained and answers there may be poor",
            ContextWarning,
            stacklevel=_caller_outside_tribit(),
        )
    pooling = None
    if key(LLM.POOLING_TYPE) in md:
        pt = _get(md, key(LLM.POOLING_TYPE), int)
        if pt not in POOLING_NAMES:
            known = ", ".join(f"{int(k)} {v}" for k, v in POOLING_NAMES.items())
            raise ModelError(
                f"metadata {key(LLM.POOLING_TYPE)!r} = {pt} is not a pooling type "
                f"tribit knows ({known})"
            )
        pooling = POOLING_NAMES[PoolingType(pt)]
    return ModelConfig(
        arch=arch,
        name=str(md.get(General.NAME, "")),
        n_embd=n_embd,
        n_ff=n_ff,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        n_vocab=n_vocab,
        n_ctx=ctx,
        n_ctx_train=n_ctx_train,
        rope_theta=theta,
        rope_type=rope_type,
        norm_eps=eps,
        act=act,
        sub_norms=sub_norms,
        tied_head=always_tied or not has_output,
        qk_norm=arch in QK_NORM_ARCHS,
        pooling=pooling,
    )


def refuse_rotated(md: dict[str, Any]) -> None:
    """ModelError for a file whose weights are Hadamard-folded (`prism.hadamard.*` keys):
    computing it as stored gives fluent nonsense (stock llama.cpp does exactly that)."""
    keys = sorted(k for k in md if k.startswith(Prism.HADAMARD_PREFIX))
    if keys:
        raise ModelError(
            f"this file declares Hadamard-folded weights ({', '.join(keys[:3])}"
            f"{', ...' if len(keys) > 3 else ''}): every folded matmul needs its activations "
            "rotated first (PrismML's Ternary Bonsai-2 format), which tribit does not do; "
            "computing the weights as stored would give fluent nonsense, so it is refused"
        )


def _caller_outside_tribit() -> int:
    """The `stacklevel` that points a warning at the first caller outside the package (the
    user's `tribit.load(...)` line, however many tribit frames lie in between)."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_ctx(n_ctx: int) -> None:
    """ModelError unless 1 <= n_ctx <= MAX_CTX."""
    if n_ctx <= 0:
        raise ModelError(f"n_ctx must be positive, got {n_ctx}")
    if n_ctx > MAX_CTX:
        raise ModelError(
            f"n_ctx {n_ctx} is above the largest context tribit supports "
            f"({MAX_CTX}: positions are 32-bit)"
        )
