"""GGUF v3 reader and writer (docs/FORMATS.md 3.1), numpy only.

The reader (`gguf_reader`) is a security boundary: every count, length, offset and size is
checked before anything is allocated or read; malformed input raises `FormatError`. The
writer (`gguf_writer`) validates its input when it is added and streams tensor data.
"""

from .gguf_reader import (
    MAX_ALIGNMENT,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_KEY_BYTES,
    MAX_KV,
    MAX_NAME_BYTES,
    MAX_STRING_BYTES,
    MAX_TENSORS,
    GGUFReader,
    TensorInfo,
)
from .gguf_writer import GGUFWriter, TensorData

__all__ = [
    "MAX_ALIGNMENT",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "MAX_KEY_BYTES",
    "MAX_KV",
    "MAX_NAME_BYTES",
    "MAX_STRING_BYTES",
    "MAX_TENSORS",
    "GGUFReader",
    "GGUFWriter",
    "TensorData",
    "TensorInfo",
]
