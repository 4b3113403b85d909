"""Mutation fuzzing of the GGUF reader (a security boundary): every mutation of a small and
of a rich file (arrays, a non-default alignment, 64-bit values, TQ2_0/I2_S/BF16/F32
tensors) gives FormatError or a file whose every view and value can be touched."""

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gguf_builder import valid_file
from tribit.errors import FormatError
from tribit.formats import GGMLType, GGUFReader, GGUFWriter

BASE = valid_file()
EXTREMES = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, 255]


@st.composite
def mutated(draw):
    blob = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "u64", "u32"]))
        pos = draw(st.integers(0, max(0, len(blob) - 1)))
        if not blob:
            break
        if kind == "flip":
            blob[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "u64" and pos + 8 <= len(blob):
            blob[pos : pos + 8] = struct.pack("<Q", draw(st.sampled_from(EXTREMES)))
        elif kind == "u32" and pos + 4 <= len(blob):
            blob[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(EXTREMES)) & 0xFFFFFFFF)
    return bytes(blob)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=mutated())
def test_mutations_fail_cleanly(tmp_path, blob):
    p = tmp_path / "m.gguf"
    p.write_bytes(blob)
    try:
        r = GGUFReader(p)
    except FormatError:
        return
    for key, value in r.metadata.items():
        assert isinstance(key, str)
        repr(value)
    for name, ti in r.tensors.items():
        raw = r.raw(name)
        assert raw.size == ti.nbytes
        int(np.asarray(raw[:16]).sum())


def _base(tmp_dir) -> bytes:
    p = tmp_dir / "base.gguf"
    w = GGUFWriter(p, alignment=64)
    w.add_metadata("general.architecture", "bitnet")
    w.add_metadata("tokenizer.ggml.tokens", ["a", "bc", "é€", ""])
    w.add_metadata("tokenizer.ggml.scores", np.array([0, -1, 2, 3], np.float32))
    w.add_metadata("tokenizer.ggml.add_bos_token", True)
    w.add_metadata("t.f64", np.array([1.5, 2.5]))
    w.add_metadata("t.u64", 2**40)
    w.add_metadata("t.bools", np.array([True, False]))
    w.add_tensor("tq", (2, 256), GGMLType.TQ2_0, np.full(2 * 66, 0x55, np.uint8))
    w.add_tensor("i2s", (2, 128), GGMLType.I2_S, np.full(2 * 32 + 32, 0x55, np.uint8))
    w.add_tensor("f", (3, 4), GGMLType.F32, np.ones((3, 4), np.float32))
    w.add_tensor("bf", (2,), GGMLType.BF16, np.zeros(2, np.uint16))
    w.write()
    return p.read_bytes()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> bytes:
    return _base(tmp_path_factory.mktemp("rich"))


RICH_EXTREMES = [0, 1, 7, 8, 9, 12, 13, 36, 38, 39, 255, 2**31, 2**32 - 1, 2**63, 2**64 - 1]
OPS = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "delete", "u64", "u32"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(1, 255),
    st.sampled_from(RICH_EXTREMES),
    st.binary(min_size=1, max_size=16),
)


def _mutate(blob: bytes, ops) -> bytes:
    b = bytearray(blob)
    for kind, where, xor, extreme, ins in ops:
        if not b:
            break
        pos = int(where * len(b))
        if kind == "flip":
            b[pos] ^= xor
        elif kind == "truncate":
            del b[pos:]
        elif kind == "delete":
            del b[pos : pos + xor % 9 + 1]
        elif kind == "insert":
            b[pos:pos] = ins
        elif kind == "u64" and pos + 8 <= len(b):
            b[pos : pos + 8] = struct.pack("<Q", extreme)
        elif kind == "u32" and pos + 4 <= len(b):
            b[pos : pos + 4] = struct.pack("<I", extreme & 0xFFFFFFFF)
    return bytes(b)


def test_base_file_is_valid(base, tmp_path):
    p = tmp_path / "b.gguf"
    p.write_bytes(base)
    r = GGUFReader(p)
    assert r.alignment == 64 and len(r.tensors) == 4
    assert r.metadata["tokenizer.ggml.tokens"] == ["a", "bc", "é€", ""]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(OPS, min_size=1, max_size=4))
def test_rich_mutations_fail_cleanly(base, tmp_path, ops):
    p = tmp_path / "m.gguf"
    p.write_bytes(_mutate(base, ops))
    try:
        r = GGUFReader(p)
    except FormatError as e:
        assert str(e)  # a message naming the problem
        return
    for key, value in r.metadata.items():
        assert isinstance(key, str) and key
        repr(value)
    size = p.stat().st_size
    for name, ti in r.tensors.items():
        assert 0 < ti.offset and ti.offset + ti.nbytes <= size
        assert ti.offset % r.alignment == 0
        raw = r.raw(name)
        assert raw.size == ti.nbytes
        int(raw.sum(dtype=np.uint64))
        if ti.ggml_type in (GGMLType.F32, GGMLType.BF16):
            assert r.array(name).shape == ti.shape
