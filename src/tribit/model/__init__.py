"""The model runtime: loading GGUF files into the native core and running them."""

from .config import ModelConfig
from .model import Model, check_arguments, load

__all__ = ["Model", "ModelConfig", "check_arguments", "load"]
