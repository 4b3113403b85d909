"""GGUF v3 reader and writer (FORMATS.md 3.1), numpy only.

The reader is a security boundary (DESIGN.md): every count, length, offset and
size is checked against hard limits and the file size before anything is
allocated or read, and any malformed input raises `FormatError` naming the
problem. Tensor data is handed out as zero-copy views of a read-only mapping.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import FormatError
from .constants import (
    BLOCK_SIZES,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    TL1_TYPE_ID,
    VALUE_DTYPES,
    GGMLType,
    GGUFValueType,
    tensor_nbytes,
    type_name,
)

# Hard limits. Generous for real models (the 2B-4T file has 332 tensors and a
# 128256-entry vocabulary; 280147 merges), small enough to stop a hostile file.
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 26
MAX_NAME_BYTES = 63  # ggml's GGML_MAX_NAME is 64 including the terminator
MAX_DIMS = 4
MAX_ELEMENTS = 1 << 62
MAX_ALIGNMENT = 1 << 20
_FIXED_SIZES = {t: np.dtype(d).itemsize for t, d in VALUE_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file. `shape` is numpy order, i.e. reversed `ne`."""

    name: str
    shape: tuple[int, ...]
    ne: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf: np.ndarray, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(f"truncated file: {what} needs {n} bytes at offset {self.pos}")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        n = self.u64(f"length of {what}")
        if n > limit:
            raise FormatError(f"{what}: string length {n} exceeds the limit of {limit} bytes")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{what}: string is not valid UTF-8 ({e.reason})") from None


class GGUFReader:
    """Read a GGUF file: metadata, tensor infos and zero-copy tensor views.

    Raises `FormatError` for anything malformed. Use as a context manager or call
    `close()`; views handed out keep the mapping alive.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        if size == 0:
            raise FormatError(f"{self.path}: empty file, not GGUF")
        self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        self.file_size = size
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, GGUFValueType] = {}
        self.tensors: dict[str, TensorInfo] = {}
        try:
            self._parse()
        except FormatError as e:
            raise FormatError(f"{self.path.name}: {e}") from None

    # -- parsing -----------------------------------------------------------
    def _parse(self) -> None:
        c = _Cursor(self._buf, self.file_size)
        magic = c.u32("magic")
        if magic != GGUF_MAGIC:
            raise FormatError(f"bad magic 0x{magic:08x}, not a GGUF file")
        self.version = c.u32("version")
        if self.version not in (2, GGUF_VERSION):
            # v1 used 32-bit counts; later versions are unknown to us
            raise FormatError(f"unsupported GGUF version {self.version} (need 2 or 3)")
        n_tensors = c.u64("tensor count")
        n_kv = c.u64("metadata count")
        # every KV needs >= 12 bytes (key length + type), every tensor info >= 28
        remaining = self.file_size - c.pos
        if n_kv > MAX_KV or n_kv * 12 > remaining:
            raise FormatError(f"metadata count {n_kv} is impossible for a file of this size")
        if n_tensors > MAX_TENSORS or n_tensors * 28 > remaining:
            raise FormatError(f"tensor count {n_tensors} is impossible for a file of this size")
        for _ in range(n_kv):
            key = c.string("metadata key", MAX_KEY_BYTES)
            if not key:
                raise FormatError("empty metadata key")
            if key in self.metadata:
                raise FormatError(f"duplicate metadata key {key!r}")
            vtype = self._value_type(c.u32(f"type of {key!r}"), key)
            self.metadata[key] = self._read_value(c, vtype, key)
            self.metadata_types[key] = vtype
        self.alignment = self._alignment()
        infos = []
        for i in range(n_tensors):
            name = c.string(f"name of tensor {i}", MAX_STRING_BYTES)
            if len(name.encode()) > MAX_NAME_BYTES:
                raise FormatError(f"tensor name {name[:80]!r} longer than {MAX_NAME_BYTES} bytes")
            if not name:
                raise FormatError(f"tensor {i} has an empty name")
            if name in self.tensors:
                raise FormatError(f"duplicate tensor name {name!r}")
            n_dims = c.u32(f"n_dims of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise FormatError(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
            ne = tuple(c.u64(f"dimension of {name!r}") for _ in range(n_dims))
            n_el = 1
            for d in ne:
                if d == 0 or d >= MAX_ELEMENTS:
                    raise FormatError(f"tensor {name!r} has invalid dimension {d}")
                n_el *= d
                if n_el >= MAX_ELEMENTS:
                    raise FormatError(f"tensor {name!r}: element count overflows")
            ggml_type = c.u32(f"type of {name!r}")
            offset = c.u64(f"offset of {name!r}")
            nbytes = self._nbytes(name, ggml_type, ne)
            infos.append((name, ne, ggml_type, offset, nbytes))
            self.tensors[name] = None  # type: ignore[assignment]  # reserve for dup check
        data_start = -(-c.pos // self.alignment) * self.alignment
        self.data_offset = data_start
        for name, ne, ggml_type, offset, nbytes in infos:
            if offset % self.alignment:
                raise FormatError(
                    f"tensor {name!r} offset {offset} is not a multiple of the "
                    f"alignment {self.alignment}"
                )
            start = data_start + offset
            if start + nbytes > self.file_size:
                raise FormatError(
                    f"tensor {name!r} data [{start}, {start + nbytes}) lies outside the file "
                    f"of {self.file_size} bytes (truncated?)"
                )
            self.tensors[name] = TensorInfo(name, tuple(reversed(ne)), ne, ggml_type, start, nbytes)

    @staticmethod
    def _value_type(raw: int, key: str) -> GGUFValueType:
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise FormatError(f"metadata {key!r} has unknown value type {raw}") from None

    def _read_value(self, c: _Cursor, vtype: GGUFValueType, key: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return c.string(f"value of {key!r}")
        if vtype == GGUFValueType.ARRAY:
            etype = self._value_type(c.u32(f"element type of {key!r}"), key)
            count = c.u64(f"length of {key!r}")
            if etype == GGUFValueType.ARRAY:
                raise FormatError(f"metadata {key!r}: nested arrays are not supported")
            if etype == GGUFValueType.STRING:
                if count * 8 > c.size - c.pos:
                    raise FormatError(f"metadata {key!r}: array length {count} exceeds the file")
                return [c.string(f"element of {key!r}") for _ in range(count)]
            size = _FIXED_SIZES[etype]
            if count * size > c.size - c.pos:
                raise FormatError(f"metadata {key!r}: array length {count} exceeds the file")
            arr = np.frombuffer(self._buf, VALUE_DTYPES[etype], count, c.pos).copy()
            c.pos += count * size
            if etype == GGUFValueType.BOOL:
                arr = arr.astype(bool)
            return arr
        size = _FIXED_SIZES[vtype]
        c.need(size, f"value of {key!r}")
        v = np.frombuffer(self._buf, VALUE_DTYPES[vtype], 1, c.pos)[0]
        c.pos += size
        if vtype == GGUFValueType.BOOL:
            if v > 1:
                raise FormatError(f"metadata {key!r}: bool value {v} is not 0 or 1")
            return bool(v)
        return v.item()

    def _alignment(self) -> int:
        a = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if self.metadata_types.get("general.alignment", GGUFValueType.UINT32) not in (
            GGUFValueType.UINT32,
            GGUFValueType.UINT64,
            GGUFValueType.INT32,
        ) or not isinstance(a, int):
            raise FormatError("general.alignment must be an unsigned integer")
        if a <= 0 or a & (a - 1) or a > MAX_ALIGNMENT:
            raise FormatError(f"general.alignment {a} is not a power of two up to {MAX_ALIGNMENT}")
        return a

    @staticmethod
    def _nbytes(name: str, ggml_type: int, ne: tuple[int, ...]) -> int:
        if ggml_type == TL1_TYPE_ID:
            raise FormatError(
                f"tensor {name!r} is TL1 (type 38): TL1/TL2 files are tied to a kernel "
                "configuration the file does not carry; convert the checkpoint again"
            )
        if ggml_type not in BLOCK_SIZES and ggml_type != GGMLType.I2_S:
            raise FormatError(f"tensor {name!r} has unknown ggml type {ggml_type}")
        try:
            return tensor_nbytes(ggml_type, tuple(reversed(ne)))
        except ValueError as e:
            raise FormatError(f"tensor {name!r}: {e}") from None

    # -- access ------------------------------------------------------------
    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view (zero-copy)."""
        ti = self._info(name)
        return self._buf[ti.offset : ti.offset + ti.nbytes]

    def array(self, name: str) -> np.ndarray:
        """A typed zero-copy view shaped `shape` for plain types (BF16 as uint16 bits)."""
        ti = self._info(name)
        dtypes = {
            GGMLType.F32: "<f4",
            GGMLType.F16: "<f2",
            GGMLType.BF16: "<u2",
            GGMLType.I8: "<i1",
            GGMLType.I16: "<i2",
            GGMLType.I32: "<i4",
            GGMLType.I64: "<i8",
            GGMLType.F64: "<f8",
        }
        if ti.ggml_type not in dtypes:
            raise FormatError(f"tensor {name!r} is {ti.type_name}, not a plain array type")
        return self.raw(name).view(dtypes[ti.ggml_type]).reshape(ti.shape)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path.name}") from None

    def close(self) -> None:
        # views keep the mapping alive; dropping our reference is enough
        self._buf = None  # type: ignore[assignment]

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TensorData = np.ndarray | bytes | Callable[[], "np.ndarray | bytes"]


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
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment {alignment} is not a power of two")
        self.path = Path(path)
        self.alignment = alignment
        self._kv: dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        if alignment != DEFAULT_ALIGNMENT:
            self.add_metadata("general.alignment", alignment, GGUFValueType.UINT32)

    def add_metadata(self, key: str, value: Any, vtype: GGUFValueType | None = None) -> None:
        """Add a key. For arrays (list / ndarray) `vtype` is the element type."""
        if not key:
            raise ValueError("empty metadata key")
        if key in self._kv:
            raise ValueError(f"duplicate metadata key {key!r}")
        if isinstance(value, (list, tuple, np.ndarray)):
            etype = vtype or _infer_array_type(value, key)
            self._kv[key] = (GGUFValueType.ARRAY, value, etype)
        else:
            self._kv[key] = (vtype or _infer_scalar_type(value, key), value, None)

    def add_tensor(
        self, name: str, shape: tuple[int, ...], ggml_type: int, data: TensorData
    ) -> None:
        """Add a tensor of numpy-order `shape`; `data` must hold exactly its bytes."""
        if not name or len(name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"invalid tensor name {name!r} (1 to {MAX_NAME_BYTES} bytes)")
        if name in self._tensors:
            raise ValueError(f"duplicate tensor name {name!r}")
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= MAX_DIMS or any(d <= 0 for d in shape):
            raise ValueError(f"tensor {name!r}: invalid shape {shape}")
        nbytes = tensor_nbytes(ggml_type, shape)
        self._tensors[name] = _PendingTensor(name, shape, int(ggml_type), data, nbytes)

    def write(self) -> None:
        """Write the whole file."""
        with open(self.path, "wb") as f:
            f.write(
                struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(self._tensors), len(self._kv))
            )
            for key, (vtype, value, etype) in self._kv.items():
                _write_string(f, key)
                f.write(struct.pack("<I", vtype))
                _write_value(f, vtype, value, etype, key)
            offset = 0
            for t in self._tensors.values():
                _write_string(f, t.name)
                f.write(struct.pack("<I", len(t.shape)))
                for d in reversed(t.shape):
                    f.write(struct.pack("<Q", d))
                f.write(struct.pack("<IQ", t.ggml_type, offset))
                offset += -(-t.nbytes // self.alignment) * self.alignment
            _pad(f, self.alignment)
            for t in self._tensors.values():
                data = t.data() if callable(t.data) else t.data
                buf = _as_bytes(data)
                if len(buf) != t.nbytes:
                    raise ValueError(
                        f"tensor {t.name!r}: got {len(buf)} bytes, {type_name(t.ggml_type)} "
                        f"{t.shape} needs {t.nbytes}"
                    )
                f.write(buf)
                del data, buf
                _pad(f, self.alignment)


def _as_bytes(data: np.ndarray | bytes) -> memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).cast("B")
    arr = np.ascontiguousarray(data)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(arr).cast("B")


def _pad(f: BinaryIO, alignment: int) -> None:
    pos = f.tell()
    f.write(b"\0" * (-pos % alignment))


def _write_string(f: BinaryIO, s: str) -> None:
    b = s.encode("utf-8")
    f.write(struct.pack("<Q", len(b)))
    f.write(b)


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
        if value.dtype not in _NP_TO_VALUE:
            raise ValueError(f"metadata {key!r}: cannot store arrays of {value.dtype}")
        return _NP_TO_VALUE[value.dtype]
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


def _write_value(
    f: BinaryIO, vtype: GGUFValueType, value: Any, etype: GGUFValueType | None, key: str
) -> None:
    if vtype == GGUFValueType.STRING:
        _write_string(f, str(value))
    elif vtype == GGUFValueType.ARRAY:
        assert etype is not None
        f.write(struct.pack("<IQ", etype, len(value)))
        if etype == GGUFValueType.STRING:
            for s in value:
                _write_string(f, s)
        else:
            arr = np.asarray(value).astype(VALUE_DTYPES[etype])
            f.write(arr.tobytes())
    else:
        v = bool(value) if vtype == GGUFValueType.BOOL else value
        f.write(np.array(v).astype(VALUE_DTYPES[vtype]).tobytes())
