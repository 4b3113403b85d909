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
    "ChatSession": ("tribit.chat", "ChatSession"),
    "create_completion": ("tribit.chat", "create_completion"),
    "create_chat_completion": ("tribit.chat", "create_chat_completion"),
    "ContextLengthError": ("tribit.generate", "ContextLengthError"),
}

__all__ = ["FormatError", "ModelError", "TribitError", "__version__", *_LAZY]


def _wire_model_methods() -> None:
    """Give Model the OpenAI-shaped methods llama-cpp-python users expect.

    They live in tribit.chat, above the model in the layer tower; the package root
    is the one place that may join the two.
    """
    from .chat import create_chat_completion, create_completion
    from .model import Model

    if not hasattr(Model, "create_completion"):
        Model.create_completion = create_completion
        Model.create_chat_completion = create_chat_completion


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(import_module(module), attr)
        if module == "tribit.model":
            _wire_model_methods()
        return value
    raise AttributeError(f"module 'tribit' has no attribute {name!r}")
