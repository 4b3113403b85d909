"""Helpers shared by the commands: argument types and reading user files with one-line
errors (a command never shows a traceback for a bad argument or file)."""

from __future__ import annotations

import argparse
import os


def port(text: str) -> int:
    """argparse type of a TCP port (0-65535)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} is outside 0-65535")
    return v


def read_text_file(path: str | os.PathLike, what: str = "file") -> str:
    """The UTF-8 text of `path` (a pipe such as `<(cmd)` works too). TribitError naming the
    problem: not found, a directory, unreadable, or not UTF-8 (with the byte offset)."""
    from tribit.errors import TribitError

    if os.path.isdir(path):
        raise TribitError(f"{what} {path} is a directory")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise TribitError(f"{what} {path} not found") from None
    except OSError as e:
        raise TribitError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TribitError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02X} at offset {e.start})"
        ) from None


def add_head_type_argument(p: argparse.ArgumentParser) -> None:
    """`--head-type`: tribit.load's head_type (run, chat, serve, perplexity)."""
    p.add_argument(
        "--head-type",
        choices=("q8_0", "q6_k"),
        default=None,
        help="repack an F32/F16/BF16 embedding/head at load into this type: smaller and "
        "faster, slightly lossy (default: the file's type, lossless)",
    )
