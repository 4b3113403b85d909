"""Shared fixtures. Tiny random models are written by tests/tiny_models.py (our own GGUF
writer); `tiny_file` writes each distinct one once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import write_tiny


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory):
    """A factory: `tiny_file(seed=0, ctx=256, n_layer=2, extra_md=None)` -> the path of the
    tests' standard tiny model (tiny_models.write_tiny) with those arguments."""
    made: dict[str, Path] = {}

    def make(**kw) -> Path:
        key = repr(sorted(kw.items()))
        if key not in made:
            made[key] = write_tiny(tmp_path_factory.mktemp("tiny") / "tiny.gguf", **kw)
        return made[key]

    return make
