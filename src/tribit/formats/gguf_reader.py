"""GGUF v3 reader (docs/FORMATS.md 3.1), numpy only.

The reader is a security boundary (docs/DESIGN.md): every count, length, offset and
size is checked against hard limits and the file size before anything is
allocated or read, and any malformed input raises `FormatError` naming the
problem. Tensor data is handed out as zero-copy views of a read-only mapping.
"""

from __future__ import annotations

import bisect
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .constants import (
    BLOCK_SIZES,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    LEGACY_Q2_0_G128,
    REFUSED_TYPES,
    TL1_TYPE_ID,
    VALUE_DTYPES,
    GGMLType,
    GGUFValueType,
    tensor_nbytes,
    type_name,
)
from .keys import General

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


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular_file(path: str | Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file.

    A directory, FIFO, device or socket is refused by name (FormatError), without blocking
    on a FIFO that has no writer; a missing or unreadable file is a FormatError too.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError(f"{path}: model file not found") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read the file: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise FormatError(f"{path} is {kind}, not a model file")
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FormatError(f"{path}: cannot open the file: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
        os.close(fd)
        raise FormatError(f"{path} is not a regular file, not a model file")
    return fd


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


_U64 = struct.Struct("<Q")


class _Cursor:
    """Bounds-checked little-endian reads from a buffer.

    `buf` is the mmap itself: slicing a np.memmap costs microseconds per call,
    which made a 400k-string vocabulary take seconds.
    """

    def __init__(self, buf: mmap.mmap, size: int):
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
        try:
            s = self.buf[self.pos : self.pos + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{what}: string is not valid UTF-8 ({e.reason})") from None
        self.pos += n
        return s

    def strings(self, count: int, what: str) -> list[str]:
        """`count` strings in a tight loop (tokenizer vocabularies and merges)."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        out: list[str] = []
        append = out.append
        try:
            for i in range(count):
                if pos + 8 > size:
                    raise FormatError(f"truncated file: length of {what}[{i}] at offset {pos}")
                (n,) = unpack(buf, pos)
                pos += 8
                if n > MAX_STRING_BYTES or pos + n > size:
                    raise FormatError(
                        f"{what}[{i}]: string length {n} at offset {pos - 8} exceeds the file"
                    )
                append(buf[pos : pos + n].decode("utf-8"))
                pos += n
        except UnicodeDecodeError as e:
            raise FormatError(
                f"{what}[{len(out)}]: string is not valid UTF-8 ({e.reason})"
            ) from None
        self.pos = pos
        return out


class GGUFReader:
    """Read a GGUF file: metadata, tensor infos and zero-copy tensor views.

    Raises `FormatError` for anything malformed. Use as a context manager or call
    `close()`; views handed out keep the mapping alive.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd = open_regular_file(self.path)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise FormatError(f"{self.path}: empty file, not GGUF")
            # the map keeps its own handle; slicing an mmap is far cheaper than a np.memmap
            try:
                self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise FormatError(f"{self.path}: cannot map the file: {e}") from None
        finally:
            os.close(fd)
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)  # read-only, zero-copy
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
        c = _Cursor(self._mm, self.file_size)
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
        self._refuse_legacy_q2_0(infos, data_start)
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

    def _refuse_legacy_q2_0(self, infos: list, data_start: int) -> None:
        """Refuse id-42 tensors that hold PrismML's legacy group-128 blocks (34 bytes per 128
        weights) instead of mainline Q2_0 (18 bytes per 64): the file does not record the
        block size, only the space between a tensor and the next one (or the end of the file)
        tells them apart (docs/FORMATS.md 3.11)."""
        if not any(info[2] == GGMLType.Q2_0 for info in infos):
            return
        starts = sorted({data_start + info[3] for info in infos} | {self.file_size})
        block, size = LEGACY_Q2_0_G128
        for name, ne, ggml_type, offset, nbytes in infos:
            if ggml_type != GGMLType.Q2_0:
                continue
            start = data_start + offset
            nxt = starts[min(bisect.bisect_right(starts, start), len(starts) - 1)]
            n = 1
            for d in ne:
                n *= d
            legacy = n // block * size if ne[0] % block == 0 else None
            if nbytes > nxt - start and legacy is not None and legacy <= nxt - start:
                raise FormatError(
                    f"tensor {name!r} is stored as type 42 (Q2_0) with {nxt - start} bytes of "
                    f"data: that is PrismML's legacy group-128 Q2_0 ({n // block} blocks of "
                    f"{size} bytes), not mainline Q2_0 (group 64: {nbytes} bytes). tribit "
                    "reads only mainline Q2_0; use a current Q2_0 file (the Ternary Bonsai "
                    "'Q2_0' downloads re-released for mainline llama.cpp)"
                )

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
                return c.strings(count, f"value of {key!r}")
            size = _FIXED_SIZES[etype]
            if count * size > c.size - c.pos:
                raise FormatError(f"metadata {key!r}: array length {count} exceeds the file")
            arr = np.frombuffer(self._buf, VALUE_DTYPES[etype], count, c.pos).copy()
            c.pos += count * size
            if etype == GGUFValueType.BOOL:
                if count and arr.max() > 1:
                    raise FormatError(f"metadata {key!r}: bool array holds a value other than 0/1")
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
        a = self.metadata.get(General.ALIGNMENT, DEFAULT_ALIGNMENT)
        if self.metadata_types.get(General.ALIGNMENT, GGUFValueType.UINT32) not in (
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
        if ggml_type in REFUSED_TYPES:
            raise FormatError(
                f"tensor {name!r} is {REFUSED_TYPES[ggml_type]}: its weights are stored in a "
                "Hadamard-rotated basis that only PrismML's llama.cpp fork computes; tribit "
                "cannot run it (use the model's mainline Q2_0 file)"
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

    def copy(self, name: str) -> np.ndarray:
        """A private, writable copy of the tensor's bytes, read with the file API.

        For tensors streamed in full on every token (the f16 head): numpy backs large
        arrays with transparent huge pages (it madvises them on Linux), where the mapped
        file has 4 KiB pages whose TLB misses and prefetch stops at every page held a
        1-thread decode at ~0.7 of the read bandwidth. The file is read, not the map, so
        the map's pages stay out of the process's resident set."""
        ti = self._info(name)
        out = np.empty(ti.nbytes, np.uint8)
        view = memoryview(out)
        with open(self.path, "rb") as f:
            f.seek(ti.offset)
            got = 0
            while got < ti.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise FormatError(
                        f"{self.path.name}: tensor {name!r} ends past the end "
                        "of the file (was it truncated?)"
                    )
                got += n
        return out

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
        if self._buf is None:
            raise ValueError(f"{self.path.name}: reader is closed")
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path.name}") from None

    def close(self) -> None:
        """Unmap the file, unless views handed out still use it (then they keep it alive)."""
        self._buf = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass  # a raw()/array() view is alive; the map goes with the last view

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
