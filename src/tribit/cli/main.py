"""`tribit` entry point: dispatches to one module per command.

Each command module defines `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Command modules import heavy dependencies inside `run`, so
that `tribit --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib import import_module

from tribit.errors import TribitWarning

# command name -> module under tribit.cli
COMMANDS = {
    "info": "info",
    "run": "run",
    "chat": "chat",
    "embed": "embed",
    "convert": "convert",
    "dummy": "dummy",
    "pull": "pull",
    "bench": "bench",
    "perplexity": "perplexity",
    "serve": "serve",
    "train": "train",
    "eval": "eval",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tribit", description="Fast, lossless 1.58-bit LLM inference on CPUs."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = import_module(f"tribit.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from tribit import __version__

    return f"tribit {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    with warnings.catch_warnings():  # restores showwarning for in-process callers
        warnings.showwarning = _show_warning
        # tribit's warnings are for the user: printed, whatever filters the caller set
        warnings.simplefilter("default", TribitWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tribit.errors import TribitError

    try:
        return int(args._run(args) or 0)
    except TribitError as e:
        print(f"tribit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or socket the user named: one line, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"tribit {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"tribit {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a context above the trained one) as one `tribit: warning:` line."""
    print(f"tribit: warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
