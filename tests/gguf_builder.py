"""A raw GGUF byte builder for tests: it writes whatever it is told, valid or not."""

import struct

GGUF_MAGIC = 0x46554747


def s(text: bytes | str, length: int | None = None) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b) if length is None else length) + b


def kv_u32(key: str, v: int) -> bytes:
    return s(key) + struct.pack("<II", 4, v)


def kv_str(key: str, v: str) -> bytes:
    return s(key) + struct.pack("<I", 8) + s(v)


def tensor_info(name: str, ne: list[int], ggml_type: int, offset: int, n_dims=None) -> bytes:
    out = s(name) + struct.pack("<I", len(ne) if n_dims is None else n_dims)
    out += b"".join(struct.pack("<Q", d) for d in ne)
    return out + struct.pack("<IQ", ggml_type, offset)


def build(
    kvs: list[bytes] = (),
    infos: list[bytes] = (),
    data: bytes = b"",
    *,
    magic: int = GGUF_MAGIC,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
) -> bytes:
    head = struct.pack(
        "<IIQQ",
        magic,
        version,
        len(infos) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * (-len(body) % alignment)
    return body + data


def valid_file() -> bytes:
    """Two F32 tensors (4 and 2x8 values) and two keys."""
    kvs = [kv_str("general.architecture", "test"), kv_u32("test.block_count", 1)]
    infos = [tensor_info("a", [4], 0, 0), tensor_info("b", [8, 2], 0, 32)]
    data = struct.pack("<4f", 1, 2, 3, 4) + b"\0" * 16 + struct.pack("<16f", *range(16))
    return build(kvs, infos, data)
