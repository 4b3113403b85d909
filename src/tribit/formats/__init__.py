"""Model file formats: GGUF read/write (numpy only; never imports the native core)."""

from .constants import GGMLType, GGUFValueType, tensor_nbytes
from .gguf_reader import GGUFReader, TensorInfo
from .gguf_writer import GGUFWriter

__all__ = ["GGMLType", "GGUFReader", "GGUFValueType", "GGUFWriter", "TensorInfo", "tensor_nbytes"]
