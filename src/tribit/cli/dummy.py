"""`tribit dummy`: a random ternary model in a named layout (benchmarks, smoke tests)."""

from __future__ import annotations

import argparse

from tribit.cli.convert import _setup_logging, add_qtype_arguments, report

HELP = "Write a random ternary GGUF model in a bitnet.cpp or real-model layout."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tribit dummy`."""
    parser.add_argument(
        "--layout",
        default=None,
        metavar="NAME",
        help="layout name, e.g. 125M, large, 3B, 2B-4T, 8B, 70B, bonsai-1.7B (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the layouts and exit")
    parser.add_argument("-o", "--outfile", metavar="OUT.gguf", help="output file")
    add_qtype_arguments(parser, head_default=None)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """List layouts or write a dummy model."""
    from tribit.convert import write_dummy
    from tribit.convert.layouts import LAYOUTS
    from tribit.errors import FormatError

    if args.list or args.layout is None:
        print(
            f"{'layout':21} {'arch':13} {'n_embd':>6} {'n_ff':>6} {'n_layer':>7} {'n_head':>6} "
            f"{'n_head_kv':>9} {'n_vocab':>7} {'params':>8}"
        )
        for lay in LAYOUTS.values():
            print(
                f"{lay.name:21} {lay.arch:13} {lay.n_embd:6} {lay.n_ff:6} {lay.n_layer:7} "
                f"{lay.n_head:6} {lay.n_head_kv:9} {lay.n_vocab:7} {lay.n_params() / 1e9:7.2f}B"
            )
        return 0
    if not args.outfile:
        raise FormatError("tribit dummy: -o OUT.gguf is required")
    _setup_logging()
    rep = write_dummy(
        args.layout,
        args.outfile,
        qtype=args.qtype,
        seed=args.seed,
        head=args.head,
        progress=not args.no_progress,
    )
    report(rep)
    return 0
