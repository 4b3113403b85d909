"""GGUF reader/writer: corrupt files (the classes of llama.cpp's test-gguf.cpp) and
round trips against PyPI gguf (gguf-py) in both directions."""

import struct

import numpy as np
import pytest

from gguf_builder import build, kv_str, kv_u32, s, tensor_info, valid_file
from tribit.errors import FormatError
from tribit.formats import GGMLType, GGUFReader, GGUFValueType, GGUFWriter, tensor_nbytes
from tribit.quant import pack_i2s, pack_tq1_0, pack_tq2_0, quantize_q8_0

gguf = pytest.importorskip("gguf")


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
