"""GGUF v3 writer (docs/FORMATS.md 3.1), numpy only.

Metadata is validated and encoded when it is added, so a bad value fails at
`add_metadata` with the key's name instead of half-way through `write()`. Tensor
data is streamed one tensor at a time; callables are evaluated lazily. The file
appears under its name only when complete (written to `<name>.part`, then renamed).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .constants import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    VALUE_DTYPES,
    GGUFValueType,
    tensor_nbytes,
    type_name,
)
from .gguf_reader import MAX_ALIGNMENT, MAX_DIMS, MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_STRING_BYTES
from .keys import General

TensorData = np.ndarray | bytes | Callable[[], "np.ndarray | bytes"]

_INT_RANGES = {
    GGUFValueType.UINT8: (0, (1 << 8) - 1),
    GGUFValueType.INT8: (-(1 << 7), (1 << 7) - 1),
    GGUFValueType.UINT16: (0, (1 << 16) - 1),
    GGUFValueType.INT16: (-(1 << 15), (1 << 15) - 1),
    GGUFValueType.UINT32: (0, (1 << 32) - 1),
    GGUFValueType.INT32: (-(1 << 31), (1 << 31) - 1),
    GGUFValueType.UINT64: (0, (1 << 64) - 1),
    GGUFValueType.INT64: (-(1 << 63), (1 << 63) - 1),
}
_FLOATS = (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64)


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data: TensorData
    nbytes: int


class GGUFWriter:
    """Write a GGUF v3 file, streaming tensor data one tensor at a time.

    Tensor data may be given as a zero-argument callable, evaluated lazily in
    `write()`, so that converters hold at most one tensor in memory.
    """

    def __init__(self, path: str | Path, alignment: int = DEFAULT_ALIGNMENT):
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment!r} is not a power of two")
        if alignment > MAX_ALIGNMENT:
            raise ValueError(f"alignment {alignment} exceeds {MAX_ALIGNMENT}")
        self.path = Path(path)
        self.alignment = alignment
        self._kv: dict[str, tuple[GGUFValueType, bytes]] = {}  # key -> (type, encoded value)
        self._tensors: dict[str, _PendingTensor] = {}
        if alignment != DEFAULT_ALIGNMENT:
            self.add_metadata(General.ALIGNMENT, alignment, GGUFValueType.UINT32)

    def add_metadata(self, key: str, value: Any, vtype: GGUFValueType | None = None) -> None:
        """Add a key. For arrays (list / tuple / ndarray) `vtype` is the element type.

        Without `vtype`: bool -> BOOL, int -> UINT32 if it fits (else INT32/INT64/UINT64),
        float -> FLOAT32, str -> STRING, list of str -> STRING array, numeric lists ->
        INT32/INT64/FLOAT32/BOOL arrays, ndarrays -> their dtype. Raises ValueError for
        values that do not fit the type.
        """
        _check_text(key, "metadata key", MAX_KEY_BYTES)
        if not key:
            raise ValueError("empty metadata key")
        if key in self._kv:
            raise ValueError(f"duplicate metadata key {key!r}")
        vt = None if vtype is None else _value_type(vtype, key)
        if isinstance(value, (list, tuple, np.ndarray)):
            etype = vt if vt is not None else _infer_array_type(value, key)
            self._kv[key] = (GGUFValueType.ARRAY, _encode_array(etype, value, key))
        else:
            t = vt if vt is not None else _infer_scalar_type(value, key)
            self._kv[key] = (t, _encode_scalar(t, value, key))

    def add_tensor(
        self, name: str, shape: tuple[int, ...], ggml_type: int, data: TensorData
    ) -> None:
        """Add a tensor of numpy-order `shape`; `data` must hold exactly its bytes."""
        _check_text(name, "tensor name", MAX_STRING_BYTES)
        if not name or len(name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"invalid tensor name {name!r} (1 to {MAX_NAME_BYTES} bytes)")
        if name in self._tensors:
            raise ValueError(f"duplicate tensor name {name!r}")
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= MAX_DIMS or any(d <= 0 for d in shape):
            raise ValueError(f"tensor {name!r}: invalid shape {shape}")
        try:
            nbytes = tensor_nbytes(int(ggml_type), shape)
        except ValueError as e:
            raise ValueError(f"tensor {name!r}: {e}") from None
        self._tensors[name] = _PendingTensor(name, shape, int(ggml_type), data, nbytes)

    def write(self) -> None:
        """Write the whole file; on any error no file is left under `path`."""
        part = self.path.with_name(self.path.name + ".part")
        try:
            with open(part, "wb") as f:
                self._write_to(f)
            os.replace(part, self.path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def _write_to(self, f: BinaryIO) -> None:
        f.write(struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(self._tensors), len(self._kv)))
        for key, (vtype, encoded) in self._kv.items():
            f.write(_string_bytes(key))
            f.write(struct.pack("<I", vtype))
            f.write(encoded)
        offset = 0
        for t in self._tensors.values():
            f.write(_string_bytes(t.name))
            f.write(struct.pack("<I", len(t.shape)))
            f.write(struct.pack(f"<{len(t.shape)}Q", *reversed(t.shape)))
            f.write(struct.pack("<IQ", t.ggml_type, offset))
            offset += -(-t.nbytes // self.alignment) * self.alignment
        _pad(f, self.alignment)
        for t in self._tensors.values():
            data = t.data() if callable(t.data) else t.data
            buf = _as_bytes(data, t.name)
            if len(buf) != t.nbytes:
                raise ValueError(
                    f"tensor {t.name!r}: got {len(buf)} bytes, {type_name(t.ggml_type)} "
                    f"{t.shape} needs {t.nbytes}"
                )
            f.write(buf)
            del data, buf  # hold at most one tensor
            _pad(f, self.alignment)


def _as_bytes(data: np.ndarray | bytes, name: str) -> memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).cast("B")
    if not isinstance(data, np.ndarray):
        raise ValueError(f"tensor {name!r}: data must be an ndarray or bytes, got {type(data)}")
    if data.dtype.hasobject:
        raise ValueError(f"tensor {name!r}: cannot write an object array")
    arr = np.ascontiguousarray(data)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(arr).cast("B")


def _pad(f: BinaryIO, alignment: int) -> None:
    f.write(b"\0" * (-f.tell() % alignment))


def _check_text(s: Any, what: str, limit: int) -> None:
    if not isinstance(s, str):
        raise ValueError(f"{what} must be a str, got {type(s).__name__}")
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {s[:80]!r} is not encodable as UTF-8 ({e.reason})") from None
    if n > limit:
        raise ValueError(f"{what} {s[:80]!r} is {n} bytes, more than {limit}")


def _string_bytes(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value_type(vtype: Any, key: str) -> GGUFValueType:
    try:
        vt = GGUFValueType(vtype)
    except ValueError:
        raise ValueError(f"metadata {key!r}: unknown value type {vtype!r}") from None
    if vt == GGUFValueType.ARRAY:
        raise ValueError(f"metadata {key!r}: for arrays pass the element type, not ARRAY")
    return vt


def _infer_scalar_type(value: Any, key: str) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 1 << 32:
            return GGUFValueType.UINT32
        if -(1 << 31) <= v < 0:
            return GGUFValueType.INT32
        return GGUFValueType.INT64 if v < 0 else GGUFValueType.UINT64
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    raise ValueError(f"metadata {key!r}: cannot store a {type(value).__name__}")


_NP_TO_VALUE = {
    np.dtype(np.uint8): GGUFValueType.UINT8,
    np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16,
    np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32,
    np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.bool_): GGUFValueType.BOOL,
    np.dtype(np.uint64): GGUFValueType.UINT64,
    np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float64): GGUFValueType.FLOAT64,
}


def _infer_array_type(value: Any, key: str) -> GGUFValueType:
    if isinstance(value, np.ndarray):
        dt = value.dtype.newbyteorder("=")
        if dt not in _NP_TO_VALUE:
            raise ValueError(f"metadata {key!r}: cannot store arrays of {value.dtype}")
        return _NP_TO_VALUE[dt]
    if all(isinstance(v, str) for v in value):
        return GGUFValueType.STRING
    if all(isinstance(v, (bool, np.bool_)) for v in value):
        return GGUFValueType.BOOL
    if all(isinstance(v, (int, np.integer)) for v in value):
        fits = all(-(1 << 31) <= int(v) < 1 << 31 for v in value)
        return GGUFValueType.INT32 if fits else GGUFValueType.INT64
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in value):
        return GGUFValueType.FLOAT32
    raise ValueError(f"metadata {key!r}: mixed or unsupported array elements")


def _encode_scalar(vtype: GGUFValueType, value: Any, key: str) -> bytes:
    if vtype == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise ValueError(f"metadata {key!r}: STRING needs a str, got {type(value).__name__}")
        _check_text(value, f"metadata {key!r} value", MAX_STRING_BYTES)
        return _string_bytes(value)
    if vtype == GGUFValueType.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"metadata {key!r}: BOOL needs a bool, got {type(value).__name__}")
        return b"\1" if value else b"\0"
    if vtype in _INT_RANGES:
        if not isinstance(value, (int, np.integer)):
            raise ValueError(
                f"metadata {key!r}: {vtype.name} needs an int, got {type(value).__name__}"
            )
        lo, hi = _INT_RANGES[vtype]
        if not lo <= int(value) <= hi:
            raise ValueError(f"metadata {key!r}: {int(value)} does not fit in {vtype.name}")
        return np.array(int(value), VALUE_DTYPES[vtype]).tobytes()
    # FLOAT32 / FLOAT64
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise ValueError(f"metadata {key!r}: {vtype.name} needs a number, got {value!r}")
    v = float(value)
    with np.errstate(over="ignore"):
        out = np.array(v, VALUE_DTYPES[vtype])
    if math.isfinite(v) and not np.isfinite(out):
        raise ValueError(f"metadata {key!r}: {v} overflows {vtype.name}")
    return out.tobytes()


def _encode_array(etype: GGUFValueType, value: Any, key: str) -> bytes:
    head = struct.pack("<IQ", etype, len(value))
    if etype == GGUFValueType.STRING:
        parts = [head]
        for i, s in enumerate(value):
            if not isinstance(s, str):
                raise ValueError(f"metadata {key!r}[{i}]: STRING array holds a {type(s).__name__}")
            _check_text(s, f"metadata {key!r}[{i}]", MAX_STRING_BYTES)
            parts.append(_string_bytes(s))
        return b"".join(parts)
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"metadata {key!r}: not a numeric array ({e})") from None
    if arr.ndim != 1:
        raise ValueError(f"metadata {key!r}: arrays must be one-dimensional, got {arr.shape}")
    kind = arr.dtype.kind
    if etype == GGUFValueType.BOOL:
        if kind != "b":
            raise ValueError(f"metadata {key!r}: BOOL array needs bools, got {arr.dtype}")
    elif etype in _INT_RANGES:
        if kind not in "iub" and not (kind == "O" and all(isinstance(v, int) for v in arr)):
            raise ValueError(f"metadata {key!r}: {etype.name} array needs ints, got {arr.dtype}")
        lo, hi = _INT_RANGES[etype]
        if arr.size and not (lo <= int(arr.min()) and int(arr.max()) <= hi):
            raise ValueError(f"metadata {key!r}: values do not fit in {etype.name}")
    elif etype in _FLOATS:
        if kind not in "iuf":
            raise ValueError(f"metadata {key!r}: {etype.name} array needs numbers, got {arr.dtype}")
    return head + arr.astype(VALUE_DTYPES[etype]).tobytes()
