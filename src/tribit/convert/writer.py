"""GGUF assembly for converted and dummy models: storage types, metadata, streaming write.

A converter or the dummy generator describes a model as a `ModelPlan`: architecture,
hyper-parameters, tokenizer metadata and a list of `TensorPlan`s whose data are produced by
zero-argument callables. `write_gguf` picks each tensor's GGML type (ternary tensors: the
requested `qtype`, falling back per tensor when the row length does not fit the block size),
writes the mainline metadata keys (docs/FORMATS.md 3.3) plus the exact f32 scale of every ternary
tensor under `tribit.scale.<name>`, and streams the tensors through `GGUFWriter`, which calls one
callable at a time, so memory stays bounded by the largest single tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tribit.errors import FormatError
from tribit.formats.constants import QUANTIZATION_VERSION, FileType, GGMLType, tensor_nbytes
from tribit.formats.gguf_writer import GGUFWriter
from tribit.formats.keys import General, arch_key, scale_key
from tribit.quant import (
    f32_to_bf16,
    lowbit,
    pack_i2s,
    pack_tq1_0,
    pack_tq2_0,
    quantize_q6_k,
    quantize_q8_0,
)

log = logging.getLogger("tribit.convert")

#: Default storage type of ternary tensors (one place to change it after benchmarks).
DEFAULT_QTYPE = "tq2_0"
QTYPES = ("tq2_0", "tq1_0", "i2_s", "f16", "q2_0", "q1_0")
HEAD_TYPES = ("f16", "bf16", "f32", "q8_0", "q6_k", "q2_0", "q1_0")

_TERNARY_TYPES = {
    "tq2_0": GGMLType.TQ2_0,
    "tq1_0": GGMLType.TQ1_0,
    "i2_s": GGMLType.I2_S,
    "f16": GGMLType.F16,
    "q2_0": GGMLType.Q2_0,
    "q1_0": GGMLType.Q1_0,
}
_HEAD_GGML = {
    "f16": GGMLType.F16,
    "bf16": GGMLType.BF16,
    "f32": GGMLType.F32,
    "q8_0": GGMLType.Q8_0,
    "q6_k": GGMLType.Q6_K,
    "q2_0": GGMLType.Q2_0,
    "q1_0": GGMLType.Q1_0,
}
# Group-scaled types (docs/FORMATS.md 3.11): written with llama.cpp's reference quantizers from
# gamma * t (Q2_0 keeps every ternary value; Q1_0 keeps the signs), one f16 scale per group.
_LOWBIT = {GGMLType.Q2_0: lowbit.quantize_row_q2_0_ref, GGMLType.Q1_0: lowbit.quantize_row_q1_0_ref}
_LOWBIT_ROWS = 2048  # rows quantized at a time (the reference quantizers hold ~5 copies)
# general.file_type: mainline llama_ftype values; I2_S: the fork's (40, which is also mainline's
# MOSTLY_Q1_0: a Q1_0 file says 40 too, mainline's value)
FILE_TYPES = {
    "tq1_0": FileType.MOSTLY_TQ1_0,
    "tq2_0": FileType.MOSTLY_TQ2_0,
    "f16": FileType.MOSTLY_F16,
    "i2_s": FileType.MOSTLY_I2_S,
    "q2_0": FileType.MOSTLY_Q2_0,
    "q1_0": FileType.MOSTLY_I2_S,
}

Kind = Literal["ternary", "norm", "embd", "head"]


@dataclass
class TensorPlan:
    """One GGUF tensor to write.

    `shape` is numpy order ((M, K) for matrices). Ternary tensors provide `gamma` (the exact
    per-tensor scale, or a callable computing it; needed before any data is written because the
    metadata precedes the data) and `load_ternary() -> (t int8 (M, K), gamma)`. Other tensors
    provide `load() -> float32 array`.
    """

    name: str
    shape: tuple[int, ...]
    kind: Kind
    load: Callable[[], np.ndarray] | None = None
    load_ternary: Callable[[], tuple[np.ndarray, float]] | None = None
    gamma: float | Callable[[], float] | None = None


@dataclass
class ModelPlan:
    """A model to write: `hparams` keys are without the `<arch>.` prefix."""

    arch: str
    name: str
    hparams: dict[str, object]
    tensors: list[TensorPlan]
    tokenizer: dict[str, object]
    metadata: dict[str, object] = field(default_factory=dict)  # extra keys, written as given


@dataclass
class WriteReport:
    """What `write_gguf` wrote."""

    path: Path
    n_tensors: int
    types: dict[str, int]  # GGML type name -> number of tensors
    fallbacks: list[tuple[str, str]]  # (tensor name, type used instead of the requested qtype)
    nbytes: int


def ternary_storage(qtype: str, k: int) -> GGMLType:
    """GGML type for a ternary (M, K) tensor under `qtype`, with the per-tensor fallback:
    TQ types need K % 256 == 0, else I2_S when K % 128 == 0, else F16 holding gamma*T;
    Q2_0 needs K % 64 == 0 and Q1_0 K % 128 == 0, else F16."""
    if qtype not in _TERNARY_TYPES:
        raise FormatError(f"unknown qtype {qtype!r}; choose one of {', '.join(QTYPES)}")
    want = _TERNARY_TYPES[qtype]
    if want in _LOWBIT:
        return want if k % lowbit.BLOCK_VALUES[qtype] == 0 else GGMLType.F16
    if want in (GGMLType.TQ1_0, GGMLType.TQ2_0) and k % 256 == 0:
        return want
    if want in (GGMLType.TQ1_0, GGMLType.TQ2_0, GGMLType.I2_S) and k % 128 == 0:
        return GGMLType.I2_S
    return GGMLType.F16


def head_storage(head: str, k: int) -> GGMLType:
    """GGML type for token_embd / output under `--head`; q8_0 needs K % 32 == 0 (else F16),
    q6_k K % 256 == 0 (else Q8_0, else F16: llama.cpp's fallback for k-quants), q2_0 K % 64
    and q1_0 K % 128 (else F16)."""
    if head not in _HEAD_GGML:
        raise FormatError(f"unknown head type {head!r}; choose one of {', '.join(HEAD_TYPES)}")
    if head in lowbit.BLOCK_VALUES:
        return _HEAD_GGML[head] if k % lowbit.BLOCK_VALUES[head] == 0 else GGMLType.F16
    if head == "q6_k" and k % 256:
        head = "q8_0"
    if head == "q8_0" and k % 32:
        return GGMLType.F16
    return _HEAD_GGML[head]


def _encode_ternary(gtype: GGMLType, t: np.ndarray, gamma: float) -> np.ndarray:
    if gtype == GGMLType.TQ2_0:
        return pack_tq2_0(t, gamma)
    if gtype == GGMLType.TQ1_0:
        return pack_tq1_0(t, gamma)
    if gtype == GGMLType.I2_S:
        return pack_i2s(t, gamma)
    if gtype in _LOWBIT:
        return _quantize_lowbit(gtype, t, gamma)
    return (t.astype(np.float32) * np.float32(gamma)).astype(np.float16)


def _quantize_lowbit(gtype: GGMLType, x: np.ndarray, gamma: np.float32 | None = None):
    """Q2_0 / Q1_0 bytes (M, K/block*18) of x (or of gamma * x for ternary t), in row chunks."""
    m = x.shape[0]
    out = np.empty((m, lowbit.row_bytes(gtype.name.lower(), x.shape[1])), np.uint8)
    for i in range(0, m, _LOWBIT_ROWS):
        rows = x[i : i + _LOWBIT_ROWS].astype(np.float32)
        if gamma is not None:
            rows *= gamma
        out[i : i + _LOWBIT_ROWS] = _LOWBIT[gtype](rows)
    return out


def _encode_float(gtype: GGMLType, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gtype in _LOWBIT:
        return _quantize_lowbit(gtype, x)
    if gtype == GGMLType.F32:
        return x
    if gtype == GGMLType.F16:
        return x.astype(np.float16)
    if gtype == GGMLType.BF16:
        return f32_to_bf16(x)
    if gtype == GGMLType.Q6_K:
        return quantize_q6_k(x)
    return quantize_q8_0(x)


def _resolve_gamma(tp: TensorPlan) -> np.float32:
    g = tp.gamma() if callable(tp.gamma) else tp.gamma
    if g is None:
        raise FormatError(f"tensor {tp.name}: no scale")
    g = np.float32(g)
    if not np.isfinite(g) or g <= 0:
        raise FormatError(f"tensor {tp.name}: weight scale {g} is not a positive finite number")
    return g


def _check_ternary(name: str, t: np.ndarray, shape: tuple[int, ...]) -> None:
    if t.shape != tuple(shape) or t.dtype != np.int8:
        raise FormatError(f"tensor {name}: ternary data {t.dtype} {t.shape}, expected int8 {shape}")


def write_gguf(
    plan: ModelPlan,
    path: str | Path,
    qtype: str = DEFAULT_QTYPE,
    head: str = "f16",
    progress: bool = True,
) -> WriteReport:
    """Write `plan` as GGUF at `path`, one tensor in memory at a time.

    Ternary scales are resolved first (they go into the metadata, which precedes the data; for
    float masters that is one extra read of each projection). Logs (logger `tribit.convert`) the
    tensors that fell back from `qtype`.
    """
    from tqdm.auto import tqdm

    if qtype not in QTYPES:
        raise FormatError(f"unknown qtype {qtype!r}; choose one of {', '.join(QTYPES)}")
    head_storage(head, 32)  # validates the name
    path = Path(path)
    ternary = [tp for tp in plan.tensors if tp.kind == "ternary"]
    slow = [tp for tp in ternary if callable(tp.gamma)]
    gammas: dict[str, np.float32] = {}
    for tp in tqdm(
        ternary, desc="scales", unit="tensor", disable=not progress or not slow, leave=False
    ):
        gammas[tp.name] = _resolve_gamma(tp)

    # write next to the target and rename at the end: no half-written OUT.gguf on errors
    part = path.with_name(path.name + ".part")
    w = GGUFWriter(part)
    w.add_metadata(General.ARCHITECTURE, plan.arch)
    w.add_metadata(General.NAME, plan.name)
    w.add_metadata(General.FILE_TYPE, int(FILE_TYPES[qtype]))
    w.add_metadata(General.QUANTIZATION_VERSION, QUANTIZATION_VERSION)
    for key, value in plan.hparams.items():
        w.add_metadata(arch_key(plan.arch, key), value)
    for key, value in plan.tokenizer.items():
        w.add_metadata(key, value)
    for key, value in plan.metadata.items():
        w.add_metadata(key, value)
    for name, g in gammas.items():  # group-scaled storage has its scales in the blocks
        if _TERNARY_TYPES[qtype] not in _LOWBIT:
            w.add_metadata(scale_key(name), float(g))

    bar = tqdm(
        total=len(plan.tensors), desc=f"writing {path.name}", unit="tensor", disable=not progress
    )
    types: dict[str, int] = {}
    fallbacks: list[tuple[str, str]] = []
    nbytes = 0
    for tp in plan.tensors:
        k = tp.shape[-1]
        if tp.kind == "ternary":
            if len(tp.shape) != 2:
                raise FormatError(f"tensor {tp.name}: ternary tensors must be 2-D, got {tp.shape}")
            gtype = ternary_storage(qtype, k)
            if gtype != _TERNARY_TYPES[qtype]:
                fallbacks.append((tp.name, gtype.name))
            data = _ternary_callable(tp, gtype, gammas[tp.name], bar)
        elif tp.kind in ("embd", "head"):
            gtype = head_storage(head, k)
            data = _float_callable(tp, gtype, bar)
        else:
            gtype = GGMLType.F32
            data = _float_callable(tp, gtype, bar)
        types[gtype.name] = types.get(gtype.name, 0) + 1
        nbytes += tensor_nbytes(gtype, tp.shape)
        w.add_tensor(tp.name, tuple(tp.shape), gtype, data)
    if fallbacks:
        by_type: dict[str, list[str]] = {}
        for name, t in fallbacks:
            by_type.setdefault(t, []).append(name)
        for t, names in by_type.items():
            shown = ", ".join(names[:4]) + (
                f", ... ({len(names) - 4} more)" if len(names) > 4 else ""
            )
            log.warning(
                "%d tensor(s) stored as %s instead of %s (row length does not fit the "
                "block size): %s",
                len(names),
                t,
                qtype.upper(),
                shown,
            )
    try:
        w.write()
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return WriteReport(path, len(plan.tensors), types, fallbacks, nbytes)


def _ternary_callable(tp: TensorPlan, gtype: GGMLType, gamma: np.float32, bar) -> Callable:
    def produce() -> np.ndarray:
        t, g = tp.load_ternary()
        _check_ternary(tp.name, t, tp.shape)
        if np.float32(g) != gamma:
            raise FormatError(f"tensor {tp.name}: scale changed between passes ({g} != {gamma})")
        out = _encode_ternary(gtype, t, gamma)
        bar.update(1)
        return out

    return produce


def _float_callable(tp: TensorPlan, gtype: GGMLType, bar) -> Callable:
    def produce() -> np.ndarray:
        x = tp.load()
        if tuple(x.shape) != tuple(tp.shape):
            raise FormatError(f"tensor {tp.name}: shape {x.shape}, expected {tp.shape}")
        if not all(np.isfinite(x[i : i + 4096]).all() for i in range(0, len(x), 4096)):
            raise FormatError(f"tensor {tp.name}: holds NaN or infinity")
        out = _encode_float(gtype, x)
        bar.update(1)
        return out

    return produce
