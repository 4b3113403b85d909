"""GGUF type coverage: the ggml type table against gguf-py and ggml, every tensor type and
every metadata value type through our writer/reader and gguf-py in both directions."""

import struct

import numpy as np
import pytest

from gguf_builder import build, kv_u32, s, tensor_info
from tribit.errors import FormatError
from tribit.formats import GGMLType, GGUFReader, GGUFValueType, GGUFWriter, tensor_nbytes
from tribit.formats.constants import BLOCK_SIZES

gguf = pytest.importorskip("gguf")

V = GGUFValueType
# boundary values of every scalar type
SCALARS = {
    "t.u8": (V.UINT8, 255),
    "t.i8": (V.INT8, -128),
    "t.u16": (V.UINT16, 65535),
    "t.i16": (V.INT16, -32768),
    "t.u32": (V.UINT32, 2**32 - 1),
    "t.i32": (V.INT32, -(2**31)),
    "t.f32": (V.FLOAT32, 1.5),
    "t.bool": (V.BOOL, True),
    "t.str": (V.STRING, "ünï €\n"),
    "t.u64": (V.UINT64, 2**64 - 1),
    "t.i64": (V.INT64, -(2**63)),
    "t.f64": (V.FLOAT64, 1e300),
}
ARRAYS = {
    "a.u8": (V.UINT8, np.array([0, 255], np.uint8)),
    "a.i16": (V.INT16, np.array([-32768, 7], np.int16)),
    "a.u32": (V.UINT32, np.array([0, 2**32 - 1], np.uint32)),
    "a.i32": (V.INT32, np.array([-5, 3, 2**31 - 1], np.int32)),
    "a.f32": (V.FLOAT32, np.array([0.0, -1.5, 2.25], np.float32)),
    "a.bool": (V.BOOL, np.array([True, False, True])),
    "a.u64": (V.UINT64, np.array([2**64 - 1], np.uint64)),
    "a.i64": (V.INT64, np.array([-(2**63), 1], np.int64)),
    "a.f64": (V.FLOAT64, np.array([1e-300, 3.0], np.float64)),
    "a.str": (V.STRING, ["", "a b", "é€😀", "x" * 1000]),
    "a.empty": (V.INT32, np.array([], np.int32)),
}
# Q8_1 is 36 bytes in ggml-common.h (2 f16 + 32 int8); gguf-py 0.19 still says 40
GGML_C_SIZES = {GGMLType.Q8_1: (32, 36)}
# types whose sizes gguf-py's reader gets wrong (see above): kept out of its read checks
GGUF_PY_MISREADS = {GGMLType.Q8_1}


def test_type_table_matches_gguf_py():
    shared = 0
    for t, sizes in gguf.GGML_QUANT_SIZES.items():
        if int(t) not in BLOCK_SIZES:
            continue
        shared += 1
        assert GGMLType(int(t)).name == t.name
        expect = GGML_C_SIZES.get(int(t), tuple(sizes))
        assert BLOCK_SIZES[int(t)] == expect, t.name
    required = (
        "F32 F16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS "
        "IQ2_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 TQ1_0 "
        "TQ2_0 MXFP4".split()
    )
    assert all(GGMLType[n] in BLOCK_SIZES for n in required)
    assert shared >= len(required)
    assert GGMLType.I2_S == 36 and GGMLType.MXFP4 == 39 and 38 not in BLOCK_SIZES


@pytest.mark.parametrize(
    ("qt", "shape", "nbytes"),
    [
        (GGMLType.F32, (3, 5), 60),
        (GGMLType.BF16, (7,), 14),
        (GGMLType.Q8_0, (2, 64), 2 * 2 * 34),
        (GGMLType.Q6_K, (1, 512), 2 * 210),
        (GGMLType.TQ1_0, (4, 256), 4 * 54),
        (GGMLType.TQ2_0, (2, 3, 512), 6 * 2 * 66),
        (GGMLType.I2_S, (3, 128), 3 * 128 // 4 + 32),
        (GGMLType.MXFP4, (1, 64), 2 * 17),
    ],
)
def test_tensor_nbytes(qt, shape, nbytes):
    assert tensor_nbytes(qt, shape) == nbytes


def test_tensor_nbytes_refuses():
    with pytest.raises(ValueError, match="multiple of 32"):
        tensor_nbytes(GGMLType.Q8_0, (32, 48))  # rows are the last (ne0) dimension
    with pytest.raises(ValueError, match="unknown ggml type"):
        tensor_nbytes(38, (4, 256))
    with pytest.raises(ValueError, match="multiple of 4"):
        tensor_nbytes(GGMLType.I2_S, (1, 3))


def _every_type_tensors():
    rng = np.random.default_rng(1)
    out = {}
    for t in [*BLOCK_SIZES, GGMLType.I2_S]:
        block = BLOCK_SIZES.get(t, (128, 0))[0]
        shape = (3, 2 * block) if block > 1 else (3, 5)
        if t == GGMLType.I2_S:
            shape = (3, 128)
        out[GGMLType(t).name] = (t, shape, rng.integers(0, 256, tensor_nbytes(t, shape), np.uint8))
    return out


@pytest.mark.parametrize("alignment", [32, 64])
def test_every_tensor_type_round_trip(tmp_path, alignment):
    tensors = _every_type_tensors()
    p = tmp_path / "all.gguf"
    w = GGUFWriter(p, alignment=alignment)
    for name, (t, shape, raw) in tensors.items():
        w.add_tensor(name, shape, t, raw)
    w.write()
    r = GGUFReader(p)
    assert list(r.tensors) == list(tensors)
    for name, (t, shape, raw) in tensors.items():
        ti = r.tensors[name]
        assert (ti.ggml_type, ti.shape, ti.ne, ti.nbytes) == (t, shape, shape[::-1], raw.size)
        assert ti.offset % alignment == 0
        assert np.array_equal(r.raw(name), raw), name
    # gguf-py reads the same bytes for every type it knows the size of
    q = tmp_path / "mainline.gguf"
    w = GGUFWriter(q, alignment=alignment)
    known = {int(k) for k in gguf.GGML_QUANT_SIZES} - set(GGUF_PY_MISREADS)
    for name, (t, shape, raw) in tensors.items():
        if t in known:
            w.add_tensor(name, shape, t, raw)
    w.write()
    ref = gguf.GGUFReader(q)
    assert len(ref.tensors) == len(known & set(BLOCK_SIZES))
    for rt in ref.tensors:
        _, shape, raw = tensors[rt.name]
        assert list(rt.shape) == list(shape[::-1])
        assert np.array_equal(np.asarray(rt.data).view(np.uint8).reshape(-1), raw), rt.name


def test_typed_views_are_zero_copy_and_read_only(tmp_path):
    p = tmp_path / "v.gguf"
    w = GGUFWriter(p)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.add_tensor("x", x.shape, GGMLType.F32, x)
    w.add_tensor("i", (2,), GGMLType.I64, np.array([-1, 2**62], np.int64))
    w.write()
    r = GGUFReader(p)
    a, raw = r.array("x"), r.raw("x")
    assert np.array_equal(a, x) and a.dtype == np.float32 and raw.dtype == np.uint8
    assert np.shares_memory(a, raw)
    assert not a.flags.writeable and not raw.flags.writeable
    with pytest.raises(ValueError):
        raw[0] = 1
    assert r.array("i").tolist() == [-1, 2**62]
    with pytest.raises(KeyError, match="no tensor named"):
        r.raw("nope")


def _gguf_py_file(path):
    w = gguf.GGUFWriter(str(path), "test")
    for key, (vt, v) in SCALARS.items():
        w.add_key_value(key, v, gguf.GGUFValueType(int(vt)))
    for key, (vt, v) in ARRAYS.items():
        if len(v):  # gguf-py refuses to write empty arrays
            w.add_key_value(key, list(v), gguf.GGUFValueType.ARRAY, gguf.GGUFValueType(int(vt)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _check_ours(r: GGUFReader, arrays: dict = ARRAYS):
    for key, (vt, v) in SCALARS.items():
        assert r.metadata_types[key] == vt, key
        assert r.metadata[key] == v and type(r.metadata[key]) is type(v), key
    for key, (vt, v) in arrays.items():
        assert r.metadata_types[key] == V.ARRAY, key
        got = r.metadata[key]
        if vt == V.STRING:
            assert got == v
        else:
            assert got.dtype == v.dtype and np.array_equal(got, v), key


def test_every_value_type_from_gguf_py(tmp_path):
    p = tmp_path / "kv.gguf"
    _gguf_py_file(p)
    _check_ours(GGUFReader(p), {k: a for k, a in ARRAYS.items() if len(a[1])})


def test_large_string_array(tmp_path):
    toks = [f"tok{i}" if i % 7 else "é" * (i % 13) for i in range(20000)]
    p = tmp_path / "vocab.gguf"
    w = GGUFWriter(p)
    w.add_metadata("tokenizer.ggml.tokens", toks)
    w.add_metadata("tokenizer.ggml.token_type", np.ones(len(toks), np.int32))
    w.write()
    assert GGUFReader(p).metadata["tokenizer.ggml.tokens"] == toks
    assert gguf.GGUFReader(p).fields["tokenizer.ggml.tokens"].contents() == toks


def test_version_2_reads_like_3(tmp_path):
    # v2 has the v3 layout (v3 only added big-endian files, which carry no marker we could trust)
    infos = [tensor_info("a", [4], 0, 0)]
    data = struct.pack("<4f", 1, 2, 3, 4)
    for version in (2, 3):
        p = tmp_path / f"v{version}.gguf"
        p.write_bytes(build([kv_u32("k", 7)], infos, data, version=version))
        r = GGUFReader(p)
        assert r.version == version and r.metadata == {"k": 7}
        assert r.array("a").tolist() == [1, 2, 3, 4]


def test_alignment_from_metadata_moves_data(tmp_path):
    blob = build([kv_u32("general.alignment", 64)], [tensor_info("a", [4], 0, 0)], alignment=64)
    p = tmp_path / "a.gguf"
    p.write_bytes(blob + struct.pack("<4f", 5, 6, 7, 8))
    r = GGUFReader(p)
    assert r.alignment == 64 and r.tensors["a"].offset == len(blob) and len(blob) % 64 == 0
    assert r.array("a").tolist() == [5, 6, 7, 8]


def test_name_limits_count_bytes(tmp_path):
    p = tmp_path / "n.gguf"
    p.write_bytes(build([], [tensor_info("x" * 63, [4], 0, 0)], b"\0" * 16))
    assert list(GGUFReader(p).tensors) == ["x" * 63]
    p.write_bytes(build([], [tensor_info("é" * 32, [4], 0, 0)], b"\0" * 16))  # 64 bytes
    with pytest.raises(FormatError, match="longer than 63"):
        GGUFReader(p)


def test_overlong_key_refused(tmp_path):
    p = tmp_path / "k.gguf"
    p.write_bytes(build([s("k" * 70000) + struct.pack("<II", 4, 1)]))
    with pytest.raises(FormatError, match="exceeds the limit"):
        GGUFReader(p)


@pytest.mark.parametrize(
    "kv",
    [
        s("k") + struct.pack("<I", 8) + s(b"ab\xc3"),  # string value cut inside a character
        s("k") + struct.pack("<IIQ", 9, 8, 2) + s("ok") + s(b"\xff"),  # bad array element
    ],
)
def test_invalid_utf8_values(tmp_path, kv):
    p = tmp_path / "u.gguf"
    p.write_bytes(build([kv]))
    with pytest.raises(FormatError, match="UTF-8"):
        GGUFReader(p)


def test_truncated_inside_string_array(tmp_path):
    kv = s("k") + struct.pack("<IIQ", 9, 8, 3) + s("a") + s("b")  # third string missing
    p = tmp_path / "t.gguf"
    p.write_bytes(build([kv])[: len(kv) + 24])
    with pytest.raises(FormatError, match="truncated|exceeds"):
        GGUFReader(p)


def test_data_ending_exactly_at_eof(tmp_path):
    blob = build([], [tensor_info("a", [8], 1, 0)], b"\1" * 16)  # F16, 16 bytes, no padding
    p = tmp_path / "e.gguf"
    p.write_bytes(blob)
    assert GGUFReader(p).raw("a").tolist() == [1] * 16
    p.write_bytes(blob[:-1])
    with pytest.raises(FormatError, match="outside the file"):
        GGUFReader(p)
