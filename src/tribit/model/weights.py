"""Reading a model's weights out of a GGUF file, one tensor at a time.

Ternary projections of every storage type (TQ1_0, TQ2_0, I2_S, F32/F16/BF16)
come out as int8 t in {-1, 0, 1} plus the exact per-tensor scale gamma, so
that the native core and the numpy oracle see identical weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..formats import GGMLType, GGUFReader
from ..formats.keys import (
    ATTN_NORM,
    ATTN_SUB_NORM,
    FFN_NORM,
    FFN_SUB_NORM,
    INPUT_NORM,
    OUTPUT,
    OUTPUT_NORM,
    PROJECTIONS,
    QK_NORMS,
    TOKEN_EMBD,
    Dims,
    Norm,
    block_tensor,
    scale_key,
    scale_tensor,
)
from ..quant import (
    absmean_ternarize,
    as_ternary,
    bf16_to_f32,
    dequantize_q6_k,
    dequantize_q8_0,
    f32_to_bf16,
    lowbit,
    quantize_q6_k,
    quantize_q8_0,
    unpack_i2s,
    unpack_tq1_0,
    unpack_tq2_0,
)
from .config import ModelConfig

FLOAT_TYPES = {
    GGMLType.F32: "f32",
    GGMLType.F16: "f16",
    GGMLType.BF16: "bf16",
    GGMLType.Q8_0: "q8_0",
    GGMLType.Q6_K: "q6_k",
    GGMLType.Q2_0: "q2_0",
    GGMLType.Q1_0: "q1_0",
}
# group-scaled low-bit projection types (docs/FORMATS.md 3.11): kept as their ggml blocks,
# computed in a `GROUP_MODES` mode, never ternarized per tensor
GROUP_TYPES = {GGMLType.Q2_0: "q2_0", GGMLType.Q1_0: "q1_0"}
# "llama": mode (a), Q8_0 activations as llama.cpp; "float": mode (b), float activations
GROUP_MODES = ("llama", "float")
# what tribit.load(head_type=...) can repack an F32/F16/BF16 embedding/head into,
# with the block length its rows must be a multiple of
HEAD_TYPES = {"q8_0": 32, "q6_k": 256}
_ROW_BYTES = {
    "f32": lambda k: 4 * k,
    "f16": lambda k: 2 * k,
    "bf16": lambda k: 2 * k,
    "q8_0": lambda k: k // 32 * 34,
    "q6_k": lambda k: k // 256 * 210,
    "q2_0": lambda k: k // 64 * 18,
    "q1_0": lambda k: k // 128 * 18,
}


def dims(cfg: ModelConfig) -> Dims:
    """The widths of `cfg`'s tensor shapes (`keys.Dims`)."""
    return Dims.of(cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_head_kv, cfg.head_dim)


def block_norms(cfg: ModelConfig) -> tuple[Norm, ...]:
    """The norms each block of `cfg` holds (sub-norms and q/k norms only where the arch has
    them; the optional per-projection input norms are `input_norms`')."""
    return (
        (ATTN_NORM, FFN_NORM)
        + ((ATTN_SUB_NORM, FFN_SUB_NORM) if cfg.sub_norms else ())
        + (QK_NORMS if cfg.qk_norm else ())
    )


def input_norms(reader: GGUFReader, i: int, d: Dims) -> dict[str, np.ndarray]:
    """The per-projection input norms block `i` holds (`which` -> float32 weights, as wide as
    the projection's input): `blk.<i>.<projection>_norm_in.weight`, each optional; a
    projection with one normalises its input before quantizing it (docs/FORMATS.md 1.6)."""
    return {
        which: read_norm(reader, i, norm, d)
        for which, norm in INPUT_NORM.items()
        if block_tensor(i, norm.suffix) in reader.tensors
    }


def read_norm(reader: GGUFReader, i: int, norm: Norm, d: Dims) -> np.ndarray:
    """Norm `norm` of block `i` as float32, checked against its width in `d`."""
    return read_f32(reader, block_tensor(i, norm.suffix), norm.shape(d))


@dataclass
class TernaryWeight:
    t: np.ndarray  # int8 (m, k)
    gamma: np.float32
    source_type: str  # storage type in the file


def require(reader: GGUFReader, name: str, shape: tuple[int, ...]):
    if name not in reader.tensors:
        raise ModelError(f"missing tensor {name!r}")
    ti = reader.tensors[name]
    if ti.shape != tuple(shape):
        raise ModelError(f"tensor {name!r} has shape {ti.shape}, expected {tuple(shape)}")
    return ti


def read_f32(reader: GGUFReader, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A small float tensor (norms) as float32."""
    ti = require(reader, name, shape)
    if ti.ggml_type == GGMLType.F32:
        return np.array(reader.array(name), np.float32)
    if ti.ggml_type == GGMLType.F16:
        return reader.array(name).astype(np.float32)
    if ti.ggml_type == GGMLType.BF16:
        return bf16_to_f32(reader.array(name))
    raise ModelError(f"tensor {name!r} is {ti.type_name}; norms must be F32, F16 or BF16")


def read_float_matrix(reader: GGUFReader, name: str, shape: tuple[int, int], copy: bool = False):
    """(raw bytes, qtype) of an embedding / head matrix: a zero-copy view of the map, or
    with `copy` a copy in memory of its own (`GGUFReader.copy`: huge pages; the runtime's
    head, +17 % 1-thread decode of 2B-4T against reading it from the mapped file)."""
    ti = require(reader, name, shape)
    if ti.ggml_type not in FLOAT_TYPES:
        raise ModelError(
            f"tensor {name!r} is {ti.type_name}; tribit reads F32, F16, BF16, Q8_0, Q6_K, Q2_0 "
            "or Q1_0 for it"
        )
    return (reader.copy(name) if copy else reader.raw(name)), FLOAT_TYPES[ti.ggml_type]


def float_matrix_f32(raw: np.ndarray, qtype: str, shape: tuple[int, int]) -> np.ndarray:
    """Dequantize a matrix returned by read_float_matrix (the oracle's copy)."""
    if qtype == "f32":
        return raw.view("<f4").reshape(shape).astype(np.float32)
    if qtype == "f16":
        return raw.view("<f2").reshape(shape).astype(np.float32)
    if qtype == "bf16":
        return bf16_to_f32(raw.view("<u2")).reshape(shape)
    if qtype == "q6_k":
        return dequantize_q6_k(raw, shape)
    if qtype in ("q2_0", "q1_0"):
        return lowbit.dequantize(raw, shape, qtype)
    return dequantize_q8_0(raw, shape)


def check_head_type(head_type: str | None) -> None:
    """Raise ModelError unless head_type is None or one of HEAD_TYPES."""
    if head_type is not None and head_type not in HEAD_TYPES:
        raise ModelError(
            f"head_type must be one of {', '.join(HEAD_TYPES)} (or None: the "
            f"file's type), got {head_type!r}"
        )


def repack_float_matrix(
    raw: np.ndarray,
    qtype: str,
    shape: tuple[int, int],
    head_type: str | None,
    name: str,
    q6_k: Callable[[np.ndarray], np.ndarray] = quantize_q6_k,
) -> tuple[np.ndarray, str]:
    """An embedding/head matrix in `head_type` (None: unchanged), quantized once.

    Only F32/F16/BF16 matrices are repacked (a quantized one would be rounded twice;
    asking for its own type is a no-op). The rows are converted to float32 a chunk at a
    time, so memory stays near the quantized copy. `q6_k` quantizes float32 rows (the
    numpy spec by default; the runtime passes the native one, bit-identical and faster).
    """
    check_head_type(head_type)
    if head_type is None or head_type == qtype:
        return raw, qtype
    if qtype not in ("f32", "f16", "bf16"):
        raise ModelError(
            f"head_type={head_type!r}: tensor {name!r} is stored as "
            f"{qtype.upper()}; only F32, F16 and BF16 embeddings/heads are repacked"
        )
    m, k = shape
    block = HEAD_TYPES[head_type]
    if k % block:
        raise ModelError(
            f"head_type={head_type!r} needs rows whose length is a multiple of "
            f"{block}; tensor {name!r} has {k} columns (n_embd)"
        )
    src_rb, dst_rb = _ROW_BYTES[qtype](k), _ROW_BYTES[head_type](k)
    quant = q6_k if head_type == "q6_k" else quantize_q8_0
    out = np.empty((m, dst_rb), np.uint8)
    flat = np.asarray(raw, np.uint8).reshape(-1)
    step = max(1, (4 << 20) // k)  # rows per chunk: 16 MiB of float32
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        x = float_matrix_f32(flat[r0 * src_rb : r1 * src_rb], qtype, (r1 - r0, k))
        out[r0:r1] = quant(np.ascontiguousarray(x, np.float32))
    return out, head_type


@dataclass
class GroupWeight:
    raw: np.ndarray  # the ggml blocks, (m * k / block * 18,) uint8
    qtype: str  # "q2_0" | "q1_0"
    shape: tuple[int, int]
    source_type: str


def check_group_mode(mode: str) -> None:
    if mode not in GROUP_MODES:
        raise ModelError(f"group_mode must be one of {', '.join(GROUP_MODES)}, got {mode!r}")


def read_projection(
    reader: GGUFReader, name: str, shape: tuple[int, int]
) -> TernaryWeight | GroupWeight:
    """A projection: Q2_0 / Q1_0 as their blocks (group scales, not one ternary scale),
    anything else as exact ternary values and a per-tensor scale (`read_ternary`)."""
    ti = require(reader, name, shape)
    if ti.ggml_type in GROUP_TYPES:
        if scale_tensor(name) in reader.tensors:
            raise ModelError(
                f"tensor {scale_tensor(name)!r}: a {ti.type_name} projection takes "
                "no output multiplier"
            )
        return GroupWeight(reader.raw(name), GROUP_TYPES[ti.ggml_type], shape, ti.type_name)
    return read_ternary(reader, name, shape)


def read_ternary(reader: GGUFReader, name: str, shape: tuple[int, int]) -> TernaryWeight:
    """A projection as exact ternary values and per-tensor scale."""
    ti = require(reader, name, shape)
    md = reader.metadata
    qt = ti.ggml_type
    if qt in (GGMLType.TQ1_0, GGMLType.TQ2_0):
        unpack = unpack_tq2_0 if qt == GGMLType.TQ2_0 else unpack_tq1_0
        t, d = unpack(reader.raw(name), shape)
        exact = scale_value(md, name)
        nonzero = np.unique(d[d != 0])
        if nonzero.size > 1:
            raise ModelError(
                f"tensor {name!r}: TQ blocks carry {nonzero.size} different scales; tribit needs "
                "one ternary scale per tensor (BitNet b1.58 weights)"
            )
        if exact is not None:
            gamma = np.float32(exact)
            if nonzero.size and np.float16(gamma) != np.float16(nonzero[0]):
                raise ModelError(
                    f"tensor {name!r}: metadata scale {gamma} disagrees with its blocks"
                )
        else:
            gamma = np.float32(nonzero[0]) if nonzero.size else np.float32(1.0)
    elif qt == GGMLType.I2_S:
        t, gamma = unpack_i2s(reader.raw(name), shape)
    elif qt in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        w = reader.array(name)
        w = bf16_to_f32(w) if qt == GGMLType.BF16 else np.asarray(w)
        tern = as_ternary(w)
        if tern is not None:
            t, gamma = tern
            exact = scale_value(md, name)
            if exact is not None and _stored(np.float32(exact), qt) == gamma:
                gamma = np.float32(exact)  # the f16 file rounded it; metadata keeps it exact
        else:
            t, gamma = absmean_ternarize(w.astype(np.float32))
    else:
        raise ModelError(
            f"tensor {name!r} is {ti.type_name}; ternary projections must be TQ1_0, TQ2_0, "
            "I2_S, F32, F16 or BF16"
        )
    # optional per-projection output multiplier of the `bitnet` arch
    scale_name = scale_tensor(name)
    if scale_name in reader.tensors:
        s = read_f32(reader, scale_name, reader.tensors[scale_name].shape).reshape(-1)
        if s.size != 1:
            raise ModelError(f"tensor {scale_name!r} must hold one value")
        gamma = np.float32(gamma * s[0])
    return TernaryWeight(t, np.float32(gamma), ti.type_name)


NORM_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
TERNARY_TYPES = (
    GGMLType.TQ1_0,
    GGMLType.TQ2_0,
    GGMLType.I2_S,
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q2_0,
    GGMLType.Q1_0,
)


def check_tensors(reader: GGUFReader, cfg: ModelConfig) -> None:
    """Check every tensor the model will read against the configuration (presence, shape,
    type, and the `tribit.scale.*` metadata) before anything large is allocated: a file
    whose `block_count` promises more layers than it holds fails here, in milliseconds,
    with a ModelError naming the first missing or wrong tensor."""

    def need(name: str, shape: tuple[int, ...], types: tuple[int, ...], what: str) -> None:
        ti = require(reader, name, shape)
        if ti.ggml_type not in types:
            raise ModelError(f"tensor {name!r} is {ti.type_name}; {what}")

    norm_msg = "norms must be F32, F16 or BF16"
    tern_msg = "ternary projections must be TQ1_0, TQ2_0, I2_S, Q2_0, Q1_0, F32, F16 or BF16"
    d = dims(cfg)
    for i in range(cfg.n_layer):
        for norm in block_norms(cfg):
            need(block_tensor(i, norm.suffix), norm.shape(d), NORM_TYPES, norm_msg)
        for norm in INPUT_NORM.values():
            if block_tensor(i, norm.suffix) in reader.tensors:
                need(block_tensor(i, norm.suffix), norm.shape(d), NORM_TYPES, norm_msg)
        for p in PROJECTIONS:
            name = block_tensor(i, p.suffix)
            need(name, p.shape(d), TERNARY_TYPES, tern_msg)
            scale_value(reader.metadata, name)
            scale_name = scale_tensor(name)
            if scale_name in reader.tensors:
                ti = reader.tensors[scale_name]
                if ti.ggml_type not in NORM_TYPES or int(np.prod(ti.shape)) != 1:
                    raise ModelError(f"tensor {scale_name!r} must hold one F32/F16/BF16 value")
    float_msg = "tribit reads F32, F16, BF16, Q8_0, Q6_K, Q2_0 or Q1_0 for it"
    need(TOKEN_EMBD, (cfg.n_vocab, cfg.n_embd), tuple(FLOAT_TYPES), float_msg)
    if not cfg.tied_head:
        need(OUTPUT, (cfg.n_vocab, cfg.n_embd), tuple(FLOAT_TYPES), float_msg)
    need(OUTPUT_NORM, (cfg.n_embd,), NORM_TYPES, norm_msg)


def scale_value(md: dict, name: str) -> np.float32 | None:
    """The exact per-tensor scale `tribit.scale.<name>` (None when absent); ModelError when it
    is not a finite number."""
    key = scale_key(name)
    v = md.get(key)
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ModelError(f"metadata {key!r} must be a number, got {type(v).__name__}")
    with np.errstate(over="ignore"):
        f = np.float32(v)
    if not np.isfinite(f):
        raise ModelError(f"metadata {key!r} = {v!r} is not a finite float32")
    return f


def _stored(x: np.float32, qt: int) -> np.float32:
    """x as a tensor of type qt stores it (F16/BF16 round it)."""
    if qt == GGMLType.F16:
        return np.float32(np.float16(x))
    if qt == GGMLType.BF16:
        return bf16_to_f32(f32_to_bf16(np.array([x], np.float32)))[0]
    return np.float32(x)
