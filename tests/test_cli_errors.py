"""CLI errors (issue 17, items 1, 2 and 8): one line on stderr, exit status 1 (or 2 for a
malformed argument), never a traceback or a crash."""

import os

import pytest

from tiny_models import tiny_model
from tribit.cli.main import main


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(tiny_model(tmp_path_factory.mktemp("clierr") / "tiny.gguf", n_layer=1))


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    "args,match",
    [
        (("-c", "36028797018963968"), "n_ctx 36028797018963968 is above the largest context"),
        (("-c", "4294967296"), "n_ctx 4294967296 is above the largest context"),
        (("-t", "100000"), "n_threads must be between 1 and"),
        (("-t", "0"), "n_threads must be between 1 and"),
    ],
)
def test_run_with_hostile_sizes(capsys, model_path, args, match):
    # -c 36028797018963968 and -t 100000 used to end in SIGSEGV (exit 139)
    code, err = run_cli(
        capsys, "run", "-m", model_path, "-p", "Mary went to", "-n", "2", "--no-perf", *args
    )
    assert code == 1
    assert match in one_line_error(err)


def test_run_prompt_file_errors(capsys, model_path, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9\n")
    for path, match in [
        (tmp_path / "missing.txt", "not found"),
        (tmp_path, "is a directory"),
        (bad, "is not UTF-8 text (byte 0xE9 at offset 3)"),
    ]:
        code, err = run_cli(capsys, "run", "-m", model_path, "-f", str(path), "-n", "1")
        assert code == 1, err
        assert match in one_line_error(err)


def test_model_path_kinds(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, match in [
        (tmp_path, "is a directory"),
        ("/dev/null", "is a character device"),
        (fifo, "is a FIFO"),
        (tmp_path / "no.gguf", "not found"),
    ]:
        code, err = run_cli(capsys, "run", "-m", str(path), "-p", "x", "-n", "1")
        assert code == 1, err
        assert match in one_line_error(err)


def test_serve_refuses_an_empty_api_key(capsys, model_path):
    # `--api-key ""` silently disabled authentication
    code, err = run_cli(capsys, "serve", "-m", model_path, "--api-key", "")
    assert code == 1
    assert "--api-key is empty" in one_line_error(err)


@pytest.mark.parametrize(
    "args,code_,match",
    [
        (("--port", "99999"), 2, "port 99999 is outside 0-65535"),
        (("--api-key-file", "/nonexistent/key"), 1, "API key file /nonexistent/key not found"),
        (("-t", "100000"), 1, "n_threads must be between"),
        (("-c", str(2**53), "-np", "4"), 1, "-c 9007199254740992 is above the largest context"),
        (("-m", "/dev/null"), 1, "is a character device"),
    ],
)
def test_serve_argument_errors(capsys, model_path, args, code_, match):
    argv = ["serve", *args] if "-m" in args else ["serve", "-m", model_path, *args]
    code, err = run_cli(capsys, *argv)
    assert code == code_, err
    assert match in one_line_error(err)


def test_context_above_training_is_a_one_line_warning(capsys, model_path):
    code, err = run_cli(
        capsys, "run", "-m", model_path, "-p", "Mary", "-n", "1", "--no-perf", "-c", "512"
    )
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert warn == [
        "tribit: warning: n_ctx 512 is above the model's trained context (256): "
        "positions past it were never trained and answers there may be poor"
    ]


def test_every_command_prints_its_help(capsys):
    """argparse formats help strings with %: a literal % in one crashed `--help`."""
    from tribit.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and isinstance(a.choices, dict))
    for name, parser in sub.choices.items():
        assert parser.format_help(), name
