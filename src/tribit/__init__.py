"""tribit: fast, lossless 1.58-bit (ternary) LLM inference on CPUs.

The top-level names are resolved lazily so that file tools (formats, quant,
tokenizer) import without the compiled core. No top-level name is also the name of a
submodule, so `tribit.generate` is the function whatever has been imported.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

from .errors import (
    ContextLengthError,
    ContextWarning,
    FormatError,
    ModelError,
    TribitError,
    TribitWarning,
)

__version__ = "0.1.0"

# Development hook: a directory holding a freshly built `_core` extension
# (e.g. build/dev) is searched before the installed one.
if os.environ.get("TRIBIT_CORE_DIR"):
    __path__.insert(0, os.path.abspath(os.environ["TRIBIT_CORE_DIR"]))  # noqa: F821

_LAZY = {
    "load": "tribit.llm",
    "Model": "tribit.llm",
    "ModelConfig": "tribit.model",
    "SamplerParams": "tribit.sampling",
    "generate": "tribit.generation",
    "stream_generate": "tribit.generation",
    "generate_step": "tribit.generation",
    "BatchGenerator": "tribit.generation",
    "GenerationChunk": "tribit.generation",
    "ChatSession": "tribit.chat",
    "create_completion": "tribit.completion",
    "create_chat_completion": "tribit.completion",
    "embed": "tribit.embedding",
    "EmbeddingBatch": "tribit.embedding",
}

__all__ = [
    "ContextLengthError",
    "ContextWarning",
    "FormatError",
    "ModelError",
    "TribitError",
    "TribitWarning",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'tribit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
