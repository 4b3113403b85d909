"""A short run of each fuzz target (fuzz/run.py) so the harness keeps working: plain seeded
mutations always, and the coverage-guided atheris run when atheris is installed. The long
runs and their numbers are in docs/FUZZING.md."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "fuzz" / "run.py"
RUNS = {"gguf": 400, "load": 150, "template": 300}


def fuzz(*args, cwd):
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("target", sorted(RUNS))
def test_plain_fuzz_smoke(target, tmp_path):
    r = fuzz(target, "--plain", "--runs", str(RUNS[target]), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    line = r.stdout.strip().splitlines()[-1]
    assert f"target={target} inputs={RUNS[target]}" in line and "findings=0" in line, line
    assert not list(tmp_path.glob("finding-*"))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
@pytest.mark.parametrize("target", sorted(RUNS))
def test_atheris_fuzz_smoke(target, tmp_path):
    r = fuzz(target, f"-runs={RUNS[target]}", f"-artifact_prefix={tmp_path}/", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Done {RUNS[target]} runs" in r.stderr
    assert not list(tmp_path.glob("crash-*"))
