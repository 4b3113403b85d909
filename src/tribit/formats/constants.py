"""GGUF constants: value types, ggml tensor types and their true byte sizes.

docs/FORMATS.md 3.1-3.2. The table is ours; the facts come from ggml (mainline) and
bitnet.cpp's fork (I2_S, id 36, whose real size is special-cased).
"""

from __future__ import annotations

from enum import IntEnum

GGUF_MAGIC = 0x46554747  # b"GGUF" little endian
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# numpy dtype strings of the fixed-size value types
VALUE_DTYPES = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    I2_S = 36  # bitnet.cpp fork; reserved (unused) in mainline
    MXFP4 = 39  # mainline; TL2 in bitnet.cpp's fork (dispatch on arch, docs/FORMATS.md 7.1)
    NVFP4 = 40  # mainline (gguf 0.19)
    Q1_0 = 41  # mainline (gguf 0.19)
    Q2_0 = 42  # mainline (llama.cpp 2026-06; not in gguf 0.19)
    PQ2_0 = 142  # PrismML's fork: group-128 ternary, Hadamard-rotated (refused)
    PTQ1_0 = 143  # PrismML's fork: group-128 base-3 ternary, Hadamard-rotated (refused)


# type -> (values per block, bytes per block)
BLOCK_SIZES: dict[int, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 36),  # ggml-common.h: 2 f16 + 32 int8 (gguf-py 0.19 says 40)
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66),
    GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82),
    GGMLType.IQ4_XS: (256, 136),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (256, 56),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 54),
    GGMLType.TQ2_0: (256, 66),
    GGMLType.MXFP4: (32, 17),
    GGMLType.NVFP4: (64, 36),
    GGMLType.Q1_0: (128, 18),
    GGMLType.Q2_0: (64, 18),
}

# Types a reader recognises only to refuse them, with the reason (docs/FORMATS.md 3.11):
# their blocks are group-128 and their weights live in a Hadamard-rotated basis that only
# PrismML's fork computes.
REFUSED_TYPES: dict[int, str] = {
    GGMLType.PQ2_0: "PQ2_0 (type 142), PrismML's group-128 ternary format",
    GGMLType.PTQ1_0: "PTQ1_0 (type 143), PrismML's group-128 base-3 ternary format",
}
# PrismML's first Q2_0 files stored group-128 blocks (f16 d + 32 bytes per 128 weights)
# under id 42 before mainline fixed Q2_0 at group 64: recognised by their byte size.
LEGACY_Q2_0_G128 = (128, 34)


class FileType(IntEnum):
    """Values of `general.file_type` (llama.cpp's llama_ftype; MOSTLY_I2_S is the fork's)."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    MOSTLY_I2_S = 40  # bitnet.cpp fork (mainline's MOSTLY_Q1_0 = 40)
    MOSTLY_Q2_0 = 41  # mainline


QUANTIZATION_VERSION = 2  # `general.quantization_version` of the files we write (ggml's)

I2S_TAIL_BYTES = 32
TL1_TYPE_ID = 38  # bitnet.cpp fork LUT format: tied to a kernel config the file lacks


def type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `shape` (any order) stored as `ggml_type`.

    Raises ValueError for unknown types or a row length that is not a multiple
    of the type's block size.
    """
    n = 1
    for d in shape:
        n *= int(d)
    if ggml_type == GGMLType.I2_S:
        # block size 1 in the fork's traits; the real size is special-cased there too
        if n % 4:
            raise ValueError(f"I2_S needs a multiple of 4 elements, got {n}")
        return n // 4 + I2S_TAIL_BYTES
    if ggml_type not in BLOCK_SIZES:
        raise ValueError(f"unknown ggml type id {ggml_type}")
    block, nbytes = BLOCK_SIZES[ggml_type]
    row = int(shape[-1]) if len(shape) else 1  # numpy order: last dim is ne0
    if row % block:
        raise ValueError(
            f"{type_name(ggml_type)} needs rows that are a multiple of {block} values, got {row}"
        )
    return n // block * nbytes
