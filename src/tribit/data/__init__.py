"""Data shipped with tribit: the bAbI-style task generator and the embedded model."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "babi-tiny.gguf"


def default_model_path() -> Path | None:
    """The embedded default model (a tiny ternary model trained on bAbI-style
    stories), or None if this installation has none."""
    p = Path(__file__).with_name(DEFAULT_MODEL)
    return p if p.is_file() else None
