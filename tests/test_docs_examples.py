"""The Python examples of README.md and docs/USAGE.md run as written: each alone in a fresh
interpreter, and all of them in one interpreter in reverse order (names must hold whatever
was imported before)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "USAGE.md"]


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.M | re.S)
        found += [(f"{doc.name}#{i}", code) for i, code in enumerate(blocks)]
    return found


EXAMPLES = _examples()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("name,code", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_runs_alone(name, code):
    r = _run(code)
    assert r.returncode == 0, f"{name}:\n{code}\n{r.stderr[-3000:]}"


def test_examples_run_together_in_reverse_order():
    code = "\n".join(c for _, c in reversed(EXAMPLES))
    r = _run(code)
    assert r.returncode == 0, r.stderr[-3000:]
