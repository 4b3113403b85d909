"""`tribit run` and `tribit chat` through real subprocesses (stdin/stdout/stderr), compared
with the Python API on the same tiny model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tribit  # noqa: E402
from tiny_models import write_tiny  # noqa: E402
from tribit.chat import ChatSession  # noqa: E402
from tribit.cli.main import build_parser  # noqa: E402
from tribit.cli.run import process_escapes  # noqa: E402
from tribit.generation import generate  # noqa: E402

# the child process must import the tribit these tests import (installed, or src/ in a
# development checkout), not whatever a relative path would find
SRC = Path(tribit.__file__).resolve().parents[1]


def tribit_cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "tribit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def model_path(tiny_file):
    return str(tiny_file(seed=7, ctx=128, n_layer=1))


@pytest.fixture(scope="module")
def model(model_path):
    return tribit.load(model_path, n_threads=1)


def test_escapes():
    assert process_escapes(r"a\nb\tc\\n\q") == "a\nb\tc\\n\\q"
    assert process_escapes("plain") == "plain"


def test_bitnet_and_llama_flags_parse():
    p = build_parser()
    a = p.parse_args(
        [
            "run",
            "-m",
            "x.gguf",
            "-p",
            "hi",
            "-n",
            "5",
            "-t",
            "3",
            "-c",
            "512",
            "-temp",
            "0.7",
            "-cnv",
            "-b",
            "1",
            "-ngl",
            "0",
        ]
    )
    assert (a.model, a.prompt, a.n_predict, a.threads, a.ctx_size) == ("x.gguf", "hi", 5, 3, 512)
    assert a.temp == 0.7 and a.conversation and a.batch_size == 1
    a = p.parse_args(
        [
            "run",
            "-p",
            "x",
            "--temp",
            "0",
            "--top-k",
            "5",
            "--top-p",
            "0.5",
            "--min-p",
            "0.1",
            "--typical-p",
            "0.9",
            "--repeat-penalty",
            "1.1",
            "--repeat-last-n",
            "32",
            "--presence-penalty",
            "0.2",
            "--frequency-penalty",
            "0.3",
            "--seed",
            "9",
            "--stop",
            "A",
            "--stop",
            "B",
        ]
    )
    assert (a.temp, a.top_k, a.top_p, a.min_p, a.typical_p) == (0.0, 5, 0.5, 0.1, 0.9)
    assert (a.repeat_penalty, a.repeat_last_n, a.seed, a.stop) == (1.1, 32, 9, ["A", "B"])
    assert (a.presence_penalty, a.frequency_penalty) == (0.2, 0.3)
    c = p.parse_args(["chat", "-m", "x.gguf", "-sys", "be nice", "-n", "4"])
    assert c.system == "be nice" and c.n_predict == 4 and c.temp is None


def test_run_prints_the_api_continuation_and_perf(model_path, model):
    r = tribit_cli("run", "-m", model_path, "-p", r"Hello\nworld", "-n", "8", "-t", "1")
    assert r.returncode == 0, r.stderr
    want = generate(model, "Hello\nworld", max_tokens=8)  # run's default: greedy
    assert r.stdout == want + "\n"
    n_prompt = len(model.tokenize("Hello\nworld"))  # \n became one newline
    assert f"/ {n_prompt:5d} tokens" in r.stderr
    for what in ("load time", "prompt eval time", "eval time", "tokens per second"):
        assert what in r.stderr
    assert "/     7 runs" in r.stderr  # 8 tokens: the first comes with the prompt


def test_run_sampling_flags_reach_the_sampler(model_path, model):
    args = [
        "run",
        "-m",
        model_path,
        "-p",
        "abc",
        "-n",
        "10",
        "-temp",
        "1.2",
        "--seed",
        "4",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--no-perf",
    ]
    r = tribit_cli(*args)
    assert r.returncode == 0, r.stderr
    want = generate(model, "abc", max_tokens=10, temperature=1.2, seed=4, top_k=0)
    assert r.stdout == want + "\n"
    assert r.stderr == ""


def test_run_stop_string(model_path, model):
    full = generate(model, "abc", max_tokens=10, temperature=1.2, seed=4, top_k=0)
    stop = full[3:5]
    if not stop.isprintable() or not stop.strip():
        pytest.skip("sampled text has no printable stop candidate")
    args = [
        "run",
        "-m",
        model_path,
        "-p",
        "abc",
        "-n",
        "10",
        "-temp",
        "1.2",
        "--seed",
        "4",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--stop",
        stop,
    ]
    r = tribit_cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == full[: full.find(stop)] + "\n"


def test_run_too_long_prompt_is_a_clear_error(model_path):
    r = tribit_cli("run", "-m", model_path, "-p", "x" * 100, "-c", "32", "-n", "4")
    assert r.returncode == 1
    assert "error" in r.stderr and "101 tokens" in r.stderr and "n_ctx=32" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_without_prompt_or_model_file(model_path, tmp_path):
    r = tribit_cli("run", "-m", model_path)
    assert r.returncode == 1 and "no prompt" in r.stderr
    r = tribit_cli("run", "-m", str(tmp_path / "missing.gguf"), "-p", "x")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def _expected_chat(model, system, turns, n):
    """The session's answers as `tribit chat` prints them (without a reply's leading blank,
    as the API sends it)."""
    session = ChatSession(model, system=system, max_tokens=n, temperature=0)
    return [session.send(t).removeprefix(" ") for t in turns]


def test_chat_repl_two_turns_then_exit(model_path, model):
    stdin = "Where is Mary?\n\nAnd John?\n/exit\nnever sent\n"
    r = tribit_cli(
        "chat", "-m", model_path, "-n", "6", "--temp", "0", "-sys", "Be brief.", stdin=stdin
    )
    assert r.returncode == 0, r.stderr
    a1, a2 = _expected_chat(model, "Be brief.", ["Where is Mary?", "And John?"], 6)
    assert r.stdout == f"{a1}\n{a2}\n"  # the empty line was not sent as a message
    assert r.stderr.count("reused") == 2  # one timing line per turn
    assert "reused)" in r.stderr.splitlines()[-1] and "(0 reused)" not in r.stderr.splitlines()[-1]


def test_run_cnv_uses_prompt_as_system_and_stops_at_eof(model_path, model):
    r = tribit_cli(
        "run",
        "-m",
        model_path,
        "-cnv",
        "-p",
        "You answer.",
        "-n",
        "5",
        "-temp",
        "0",
        "--no-perf",
        stdin="hi\nmulti \\\nline\n",
    )
    assert r.returncode == 0, r.stderr
    a1, a2 = _expected_chat(model, "You answer.", ["hi", "multi \nline"], 5)
    assert r.stdout == f"{a1}\n{a2}\n"


def test_run_default_model_answers_the_readme_prompt():
    # the first command of the README: no -m, greedy by default, stops at end of text
    from tribit.data import default_model_path

    if default_model_path() is None:
        pytest.skip("no embedded model in this tree")
    prompt = (
        "Daniel went back to the the the garden. Mary travelled to the kitchen. Sandra "
        "journeyed to the kitchen. Sandra went to the hallway. John went to the bedroom. "
        r"Mary went back to the garden. Where is Mary?\nAnswer:"
    )
    r = tribit_cli("run", "-p", prompt, "-t", "1")
    assert r.returncode == 0, r.stderr
    assert "embedded model" in r.stderr
    assert r.stdout == " Mary is in the garden.\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT semantics")
def test_chat_ctrl_c_stops_the_answer_not_the_program(tmp_path):
    # a long greedy answer (context 4096, no end token on this model) gets interrupted
    path = str(write_tiny(tmp_path / "long.gguf", seed=7, ctx=4096, n_layer=1))
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "tribit", "chat", "-m", path, "--temp", "0", "-t", "1"]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        bufsize=0,
        # as from a terminal: a run started in the background (`cmd &`, as CI scripts
        # may be) inherits SIGINT ignored, and Python then installs no Ctrl-C handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        assert proc.stdout.read(1)  # the answer has started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(b"/exit\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"answer stopped" in err
    assert b"Traceback" not in err
