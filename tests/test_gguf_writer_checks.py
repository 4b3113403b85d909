"""GGUF writer input checks, atomic writes, explicit value types (incl. UINT8 = 0), reader
close() and bool arrays. Needs the formats patch (gguf_reader.py / gguf_writer.py split)."""

import struct

import numpy as np
import pytest

from gguf_builder import build, s
from test_gguf_types import ARRAYS, SCALARS, V, _check_ours
from tribit.errors import FormatError
from tribit.formats import GGMLType, GGUFReader, GGUFValueType, GGUFWriter, tensor_nbytes

gguf = pytest.importorskip("gguf")


def test_every_value_type_to_gguf_py(tmp_path):
    p = tmp_path / "kv.gguf"
    w = GGUFWriter(p)
    for key, (vt, v) in SCALARS.items():
        w.add_metadata(key, v, vt)
    for key, (vt, v) in ARRAYS.items():
        w.add_metadata(key, v, vt)
    w.write()
    _check_ours(GGUFReader(p))
    f = gguf.GGUFReader(p).fields
    for key, (vt, v) in SCALARS.items():
        assert f[key].types == [gguf.GGUFValueType(int(vt))], key
        assert f[key].contents() == v, key
    for key, (vt, v) in ARRAYS.items():
        assert f[key].types[0] == gguf.GGUFValueType.ARRAY
        assert f[key].contents() == (v if vt == V.STRING else v.tolist()), key


@pytest.mark.parametrize(
    ("value", "vtype", "match"),
    [
        (-1, GGUFValueType.UINT32, "does not fit in UINT32"),
        (300, GGUFValueType.UINT8, "does not fit in UINT8"),
        (2**64, GGUFValueType.UINT64, "does not fit in UINT64"),
        (1.5, GGUFValueType.INT32, "needs an int"),
        ("3", GGUFValueType.UINT32, "needs an int"),
        (1, GGUFValueType.STRING, "needs a str"),
        (1, GGUFValueType.BOOL, "needs a bool"),
        ("x", GGUFValueType.FLOAT32, "needs a number"),
        (1e300, GGUFValueType.FLOAT32, "overflows FLOAT32"),
        ([1, 2], GGUFValueType.ARRAY, "element type, not ARRAY"),
        ([1, -1], GGUFValueType.UINT16, "do not fit in UINT16"),
        ([1.5], GGUFValueType.INT32, "needs ints"),
        ([1, 2], GGUFValueType.BOOL, "needs bools"),
        (["a", 1], GGUFValueType.STRING, "holds a int"),
        (np.zeros((2, 2), np.float32), None, "one-dimensional"),
        ("\udc80", None, "not encodable"),
        (["ok", "\udc80"], None, "not encodable"),
        ({"a": 1}, None, "cannot store a dict"),
        (None, None, "cannot store a NoneType"),
        (np.array(["a"]), None, "cannot store arrays of"),
        (1, 99, "unknown value type 99"),
    ],
)
def test_add_metadata_refuses(tmp_path, value, vtype, match):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match=match):
        w.add_metadata("k", value, vtype)


@pytest.mark.parametrize(
    ("key", "match"), [(5, "must be a str"), ("", "empty"), ("\udc80", "not encodable")]
)
def test_add_metadata_refuses_keys(tmp_path, key, match):
    with pytest.raises(ValueError, match=match):
        GGUFWriter(tmp_path / "x.gguf").add_metadata(key, 1)


def test_add_tensor_refuses(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="tensor 'w': I2_S needs a multiple of 4"):
        w.add_tensor("w", (1, 3), GGMLType.I2_S, b"")
    with pytest.raises(ValueError, match="unknown ggml type id 38"):
        w.add_tensor("w", (1, 256), 38, b"")
    with pytest.raises(ValueError, match="invalid shape"):
        w.add_tensor("w", (2, 0), GGMLType.F32, b"")
    with pytest.raises(ValueError, match="invalid shape"):
        w.add_tensor("w", (1, 1, 1, 1, 1), GGMLType.F32, b"")
    with pytest.raises(ValueError, match="must be a str"):
        w.add_tensor(b"w", (4,), GGMLType.F32, b"")
    with pytest.raises(ValueError, match="invalid tensor name"):
        w.add_tensor("é" * 32, (4,), GGMLType.F32, b"")  # 64 bytes
    with pytest.raises(ValueError, match="power of two"):
        GGUFWriter(tmp_path / "y.gguf", alignment=48)


@pytest.mark.parametrize("fail", ["raises", "short", "object"])
def test_failed_write_leaves_no_file(tmp_path, fail):
    p = tmp_path / "f.gguf"
    p.write_bytes(b"old")

    def boom():
        raise RuntimeError("converter failed")

    data = {
        "raises": boom,
        "short": np.zeros(3, np.float32),
        "object": np.array([object()] * 4),
    }[fail]
    w = GGUFWriter(p)
    w.add_tensor("ok", (4,), GGMLType.F32, np.zeros(4, np.float32))
    w.add_tensor("bad", (4,), GGMLType.F32, data)
    with pytest.raises((RuntimeError, ValueError)):
        w.write()
    assert p.read_bytes() == b"old"  # the previous file is untouched, no partial file
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.gguf"]


def test_explicit_uint8_is_kept(tmp_path):
    # GGUFValueType.UINT8 is 0: a `vtype or infer()` test would drop it
    p = tmp_path / "u8.gguf"
    w = GGUFWriter(p)
    w.add_metadata("s", 7, GGUFValueType.UINT8)
    w.add_metadata("a", [1, 2], GGUFValueType.UINT8)
    w.write()
    r = GGUFReader(p)
    assert r.metadata_types["s"] == GGUFValueType.UINT8 and r.metadata["s"] == 7
    assert r.metadata["a"].dtype == np.uint8 and r.metadata["a"].tolist() == [1, 2]


def test_new_mainline_types_known():
    assert tensor_nbytes(GGMLType.NVFP4, (2, 128)) == 2 * 2 * 36
    assert tensor_nbytes(GGMLType.Q1_0, (1, 256)) == 2 * 18


def test_bool_array_values_checked(tmp_path):
    p = tmp_path / "b.gguf"
    p.write_bytes(build([s("k") + struct.pack("<IIQ", 9, 7, 2) + bytes([1, 2])]))
    with pytest.raises(FormatError, match="bool array"):
        GGUFReader(p)


def test_close(tmp_path):
    p = tmp_path / "c.gguf"
    w = GGUFWriter(p)
    w.add_tensor("x", (4,), GGMLType.F32, np.arange(4, dtype=np.float32))
    w.write()
    r = GGUFReader(p)
    view = r.array("x")
    r.close()
    assert view.tolist() == [0, 1, 2, 3]  # a live view keeps the mapping
    with pytest.raises(ValueError, match="closed"):
        r.raw("x")
    with GGUFReader(p) as r2:
        assert r2.metadata == {}
    with pytest.raises(ValueError, match="closed"):
        r2.array("x")
