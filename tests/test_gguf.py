"""The GGUF reader and writer (docs/FORMATS.md 3): the format against gguf-py and hand-built
bytes, every value and tensor type in both directions, the ggml type table, the writer's
input checks, atomic writes and explicit value types, and the reader's limits."""

import struct

import gguf
import numpy as np
import pytest

from gguf_builder import build, kv_str, kv_u32, s, tensor_info, valid_file
from tribit.errors import FormatError
from tribit.formats import GGMLType, GGUFReader, GGUFValueType, GGUFWriter, tensor_nbytes
from tribit.formats.constants import BLOCK_SIZES
from tribit.quant import pack_i2s, pack_tq1_0, pack_tq2_0, quantize_q8_0


def _read(tmp_path, blob: bytes) -> GGUFReader:
    p = tmp_path / "f.gguf"
    p.write_bytes(blob)
    return GGUFReader(p)


def _bad(tmp_path, blob: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        _read(tmp_path, blob)


def test_valid_file_reads(tmp_path):
    r = _read(tmp_path, valid_file())
    assert r.metadata == {"general.architecture": "test", "test.block_count": 1}
    assert list(r.tensors) == ["a", "b"]
    assert r.tensors["b"].shape == (2, 8) and r.tensors["b"].ne == (8, 2)
    assert r.array("a").tolist() == [1, 2, 3, 4]
    assert r.array("b")[1, 7] == 15


def test_bad_magic(tmp_path):
    _bad(tmp_path, build(magic=0x12345678), "bad magic")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_bad_version(tmp_path, version):
    _bad(tmp_path, build(version=version), "unsupported GGUF version")


@pytest.mark.parametrize("field", ["n_tensors", "n_kv"])
@pytest.mark.parametrize("value", [2**64 - 1, 2**40, 10**6])
def test_impossible_counts(tmp_path, field, value):
    _bad(tmp_path, build(**{field: value}), "impossible")


def test_key_length_minus_one(tmp_path):
    kv = struct.pack("<Q", 2**64 - 1) + b"x" * 8
    _bad(tmp_path, build([kv]), "limit|truncated")


def test_empty_key(tmp_path):
    _bad(tmp_path, build([kv_u32("", 1)]), "empty metadata key")


def test_duplicate_key(tmp_path):
    _bad(tmp_path, build([kv_u32("a.b", 1), kv_u32("a.b", 2)]), "duplicate metadata key")


def test_bad_value_type(tmp_path):
    _bad(tmp_path, build([s("k") + struct.pack("<I", 13) + b"\0" * 8]), "unknown value type 13")


def test_huge_string_length(tmp_path):
    kv = s("k") + struct.pack("<I", 8) + struct.pack("<Q", 2**63) + b"abc"
    _bad(tmp_path, build([kv]), "exceeds the limit|truncated")


def test_string_longer_than_file(tmp_path):
    kv = s("k") + struct.pack("<I", 8) + struct.pack("<Q", 1000) + b"abc"
    _bad(tmp_path, build([kv]), "truncated")


def test_huge_array_length(tmp_path):
    kv = s("k") + struct.pack("<IIQ", 9, 4, 2**62) + b"\0" * 16
    _bad(tmp_path, build([kv]), "exceeds the file")
    kv = s("k") + struct.pack("<IIQ", 9, 8, 2**61) + b"\0" * 16
    _bad(tmp_path, build([kv]), "exceeds the file")


def test_nested_array(tmp_path):
    kv = s("k") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 1) + b"\0" * 4
    _bad(tmp_path, build([kv]), "nested arrays")


def test_invalid_utf8(tmp_path):
    _bad(tmp_path, build([s(b"k\xff\xfe") + struct.pack("<II", 4, 1)]), "UTF-8")


def test_bad_bool(tmp_path):
    _bad(tmp_path, build([s("k") + struct.pack("<IB", 7, 2)]), "bool")


def test_overlong_tensor_name(tmp_path):
    _bad(tmp_path, build([], [tensor_info("x" * 64, [4], 0, 0)], b"\0" * 16), "longer than")


def test_duplicate_tensor_name(tmp_path):
    infos = [tensor_info("a", [4], 0, 0), tensor_info("a", [4], 0, 32)]
    _bad(tmp_path, build([], infos, b"\0" * 64), "duplicate tensor name")


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_bad_n_dims(tmp_path, n_dims):
    info = tensor_info("a", [4, 1, 1, 1, 1][: min(n_dims, 5)], 0, 0, n_dims=n_dims)
    _bad(tmp_path, build([], [info], b"\0" * 16), "dimensions")


def test_zero_dimension(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [4, 0], 0, 0)], b"\0" * 16), "invalid dimension")


@pytest.mark.parametrize("ne", [[2**63, 2], [2**32, 2**32], [2**31, 2**31, 4]])
def test_element_count_overflow(tmp_path, ne):
    _bad(tmp_path, build([], [tensor_info("a", ne, 0, 0)], b"\0" * 16), "overflow|invalid")


def test_byte_count_beyond_file(tmp_path):
    # 2^40 f32 values do not overflow but cannot fit in the file
    _bad(tmp_path, build([], [tensor_info("a", [2**20, 2**20], 0, 0)], b"\0" * 16), "outside")


def test_unknown_type(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [4], 77, 0)], b"\0" * 16), "unknown ggml type 77")


def test_tl1_refused_clearly(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [256], 38, 0)], b"\0" * 96), "TL1")


def test_block_size_mismatch(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [100], 35, 0)], b"\0" * 96), "multiple of 256")


def test_offset_outside_file(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [4], 0, 2**20)], b"\0" * 16), "outside")
    _bad(tmp_path, build([], [tensor_info("a", [4], 0, 2**64 - 32)], b"\0" * 16), "outside")


def test_misaligned_offset(tmp_path):
    _bad(tmp_path, build([], [tensor_info("a", [4], 0, 4)], b"\0" * 64), "alignment")


@pytest.mark.parametrize("alignment", [0, 3, 48, 2**31])
def test_bad_alignment(tmp_path, alignment):
    _bad(tmp_path, build([kv_u32("general.alignment", alignment)]), "alignment")


def test_alignment_wrong_type(tmp_path):
    _bad(tmp_path, build([kv_str("general.alignment", "32")]), "alignment")


@pytest.mark.parametrize("cut", [1, 4, 12, 30, 60, 100, -1])
def test_truncated(tmp_path, cut):
    blob = valid_file()
    _bad(tmp_path, blob[:cut], "truncated|outside|impossible|bad magic|empty")


def test_empty_file(tmp_path):
    _bad(tmp_path, b"", "empty")


def test_i2s_true_size(tmp_path):
    m, k = 3, 128
    raw = pack_i2s(np.ones((m, k), np.int8), 0.5)
    assert raw.size == tensor_nbytes(GGMLType.I2_S, (m, k)) == m * k // 4 + 32
    blob = build([], [tensor_info("w", [k, m], 36, 0)], raw.tobytes())
    r = _read(tmp_path, blob)
    assert r.tensors["w"].nbytes == raw.size
    assert np.array_equal(r.raw("w"), raw)
    # one byte short of the tail: refused
    _bad(tmp_path, blob[:-1], "outside")


# --- round trips with gguf-py ------------------------------------------------


def _sample_tensors():
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, size=(4, 512)).astype(np.int8)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    return {
        "f32": (GGMLType.F32, x, x),
        "f16": (GGMLType.F16, x.astype(np.float16), x.astype(np.float16)),
        "bf16": (GGMLType.BF16, (x.view(np.uint32) >> 16).astype(np.uint16), None),
        "q8": (GGMLType.Q8_0, quantize_q8_0(x), None),
        "tq1": (GGMLType.TQ1_0, pack_tq1_0(t, 0.25), None),
        "tq2": (GGMLType.TQ2_0, pack_tq2_0(t, 0.25), None),
    }, {
        "f32": (3, 64),
        "f16": (3, 64),
        "bf16": (3, 64),
        "q8": (3, 64),
        "tq1": (4, 512),
        "tq2": (4, 512),
    }


def test_our_writer_gguf_py_reader(tmp_path):
    tensors, shapes = _sample_tensors()
    p = tmp_path / "ours.gguf"
    w = GGUFWriter(p)
    w.add_metadata("general.architecture", "bitnet")
    w.add_metadata("bitnet.block_count", 2)
    w.add_metadata("bitnet.rope.freq_base", 500000.0)
    w.add_metadata("tokenizer.ggml.add_bos_token", True)
    w.add_metadata("tokenizer.ggml.tokens", ["a", "b", "é€"])
    w.add_metadata("tokenizer.ggml.scores", np.array([0.0, -1.5, 2.0], np.float32))
    w.add_metadata("tokenizer.ggml.token_type", [1, 3, 1])
    w.add_metadata("tribit.big", 2**40)
    w.add_metadata("tribit.neg", -5)
    for name, (qt, data, _) in tensors.items():
        w.add_tensor(name, shapes[name], qt, data)
    w.write()
    ref = gguf.GGUFReader(p)
    f = {k: v for k, v in ref.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"].contents() == "bitnet"
    assert f["bitnet.block_count"].contents() == 2
    assert f["bitnet.block_count"].types == [gguf.GGUFValueType.UINT32]
    assert f["bitnet.rope.freq_base"].contents() == 500000.0
    assert f["tokenizer.ggml.add_bos_token"].contents() is True
    assert f["tokenizer.ggml.tokens"].contents() == ["a", "b", "é€"]
    assert f["tokenizer.ggml.scores"].contents() == [0.0, -1.5, 2.0]
    assert f["tokenizer.ggml.token_type"].contents() == [1, 3, 1]
    assert f["tribit.big"].contents() == 2**40 and f["tribit.neg"].contents() == -5
    by_name = {t.name: t for t in ref.tensors}
    for name, (qt, data, _) in tensors.items():
        t = by_name[name]
        assert int(t.tensor_type) == qt
        assert list(t.shape) == list(reversed(shapes[name]))
        assert np.array_equal(
            np.asarray(t.data).view(np.uint8).reshape(-1),
            np.ascontiguousarray(data).view(np.uint8).reshape(-1),
        )


def test_gguf_py_writer_our_reader(tmp_path):
    tensors, shapes = _sample_tensors()
    p = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(str(p), "bitnet")
    w.add_uint32("bitnet.block_count", 2)
    w.add_float32("bitnet.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_array("tokenizer.ggml.tokens", ["x", "y"])
    w.add_string("general.name", "tiny")
    for name, (qt, data, _) in tensors.items():
        w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType(qt))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = GGUFReader(p)
    assert r.metadata["general.architecture"] == "bitnet"
    assert r.metadata["bitnet.block_count"] == 2
    assert r.metadata["bitnet.rope.freq_base"] == 10000.0
    assert r.metadata["tokenizer.ggml.add_bos_token"] is False
    assert r.metadata["tokenizer.ggml.tokens"] == ["x", "y"]
    assert r.metadata["general.name"] == "tiny"
    for name, (qt, data, _) in tensors.items():
        ti = r.tensors[name]
        assert ti.ggml_type == qt and ti.shape == shapes[name], name
        assert np.array_equal(r.raw(name), np.ascontiguousarray(data).view(np.uint8).reshape(-1))
    assert np.array_equal(r.array("f32"), tensors["f32"][1])


def test_writer_streams_lazily(tmp_path):
    calls = []

    def make(i):
        def f():
            calls.append(i)
            return np.full(8, i, np.float32)

        return f

    w = GGUFWriter(tmp_path / "lazy.gguf")
    for i in range(3):
        w.add_tensor(f"t{i}", (8,), GGMLType.F32, make(i))
    assert calls == []
    w.write()
    assert calls == [0, 1, 2]
    r = GGUFReader(tmp_path / "lazy.gguf")
    assert r.array("t2").tolist() == [2.0] * 8


def test_writer_validates(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="multiple of 256"):
        w.add_tensor("w", (2, 100), GGMLType.TQ2_0, b"")
    with pytest.raises(ValueError, match="invalid tensor name"):
        w.add_tensor("n" * 64, (4,), GGMLType.F32, b"")
    w.add_tensor("w", (4,), GGMLType.F32, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="needs 16"):
        w.write()
    w2 = GGUFWriter(tmp_path / "y.gguf")
    w2.add_metadata("k", 1)
    with pytest.raises(ValueError, match="duplicate"):
        w2.add_metadata("k", 2)


def test_custom_alignment_round_trip(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf", alignment=64)
    w.add_tensor("a", (3,), GGMLType.F32, np.arange(3, dtype=np.float32))
    w.add_tensor("b", (5,), GGMLType.F32, np.arange(5, dtype=np.float32))
    w.write()
    r = GGUFReader(tmp_path / "a.gguf")
    assert r.alignment == 64 and r.metadata["general.alignment"] == 64
    assert r.tensors["b"].offset % 64 == 0
    assert r.array("b").tolist() == [0, 1, 2, 3, 4]
    assert GGUFValueType.UINT32 == r.metadata_types["general.alignment"]


def test_copy_is_the_tensor_bytes_and_refuses_a_truncated_file(tmp_path):
    """GGUFReader.copy (the runtime's head: memory of its own) gives the same bytes as the
    zero-copy view, writable and not the map; a file cut short after parsing is a
    FormatError, not short data."""
    path = tmp_path / "m.gguf"
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "bitnet")
    data = np.arange(3 * 96, dtype=np.float32).reshape(3, 96)
    w.add_tensor("a", data.shape, GGMLType.F32, data.tobytes())
    w.add_tensor("b", (3, 32), GGMLType.F32, (data[:, :32] * 2).tobytes())
    w.write()
    r = GGUFReader(path)
    for name in ("a", "b"):
        c = r.copy(name)
        assert c.dtype == np.uint8 and c.flags.writeable and c.flags.owndata
        assert c.tobytes() == r.raw(name).tobytes()
    np.testing.assert_array_equal(r.copy("b").view("<f4").reshape(3, 32), data[:, :32] * 2)
    with open(path, "r+b") as f:
        f.truncate(r.tensors["b"].offset + 8)
    with pytest.raises(FormatError, match="truncated"):
        r.copy("b")
    r.close()


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
