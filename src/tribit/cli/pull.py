"""`tribit pull`: download a checkpoint from the Hugging Face Hub and convert it."""

from __future__ import annotations

import argparse

from tribit.cli.convert import _setup_logging, add_qtype_arguments, report

HELP = "Download a BitNet checkpoint from the Hugging Face Hub and convert it to GGUF."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tribit pull`."""
    parser.add_argument(
        "repo", metavar="REPO", help="hub repository, e.g. microsoft/bitnet-b1.58-2B-4T"
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    parser.add_argument(
        "-o",
        "--outdir",
        default=None,
        metavar="DIR",
        help="output directory (default models/<repo name>); the file is ggml-model-<qtype>.gguf",
    )
    add_qtype_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Download and convert."""
    from tribit.convert import DEFAULT_QTYPE
    from tribit.convert.pull import pull

    _setup_logging()
    rep = pull(
        args.repo,
        revision=args.revision,
        out_dir=args.outdir,
        qtype=args.qtype or DEFAULT_QTYPE,
        head=args.head,
        progress=not args.no_progress,
    )
    report(rep)
    return 0
