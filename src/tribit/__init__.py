"""tribit: fast, lossless 1.58-bit (ternary) LLM inference on CPUs.

The top-level names are resolved lazily so that file tools (formats, quant,
tokenizer) import without the compiled core.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

from .errors import FormatError, ModelError, TribitError

__version__ = "0.1.0"

# Development hook: a directory holding a freshly built `_core` extension
# (e.g. build/dev) is searched before the installed one.
if os.environ.get("TRIBIT_CORE_DIR"):
    __path__.insert(0, os.path.abspath(os.environ["TRIBIT_CORE_DIR"]))  # noqa: F821

_LAZY = {
    "load": ("tribit.model", "load"),
    "Model": ("tribit.model", "Model"),
    "ModelConfig": ("tribit.model", "ModelConfig"),
    "generate": ("tribit.generate", "generate"),
    "stream_generate": ("tribit.generate", "stream_generate"),
    "generate_step": ("tribit.generate", "generate_step"),
}

__all__ = ["FormatError", "ModelError", "TribitError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'tribit' has no attribute {name!r}")
