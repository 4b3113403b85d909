"""`tribit convert`: a Hugging Face checkpoint directory to GGUF."""

from __future__ import annotations

import argparse

HELP = "Convert a Hugging Face BitNet checkpoint (safetensors) to GGUF."

# kept in sync with tribit.convert.writer (not imported here to keep `tribit --help` fast)
QTYPES = ("tq2_0", "tq1_0", "i2_s", "f16", "q2_0", "q1_0")
HEAD_TYPES = ("f16", "bf16", "f32", "q8_0", "q6_k", "q2_0", "q1_0")


def add_qtype_arguments(parser: argparse.ArgumentParser, head_default: str | None = "f16") -> None:
    """--qtype and --head, shared by convert, pull and dummy (dummy: the layout's defaults)."""
    parser.add_argument(
        "--qtype",
        choices=QTYPES,
        default=None,
        help="storage of the ternary projections (default: tq2_0, or the "
        "layout's; tensors whose row length is not a multiple of 256 fall "
        "back to i2_s, then f16; q2_0 / q1_0: mainline llama.cpp's "
        "group-scaled types, rows of 64 / 128, else f16)",
    )
    parser.add_argument(
        "--head",
        choices=HEAD_TYPES,
        default=head_default,
        help="storage of token_embd / output (default: f16, lossless, or the "
        "layout's; q8_0 and q6_k are smaller and faster, slightly lossy; q6_k "
        "needs n_embd %% 256 == 0, else q8_0; q2_0 / q1_0 as Ternary Bonsai)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `tribit convert`."""
    parser.add_argument(
        "hf_dir",
        metavar="HF_DIR",
        help="checkpoint directory (config.json, *.safetensors, tokenizer files)",
    )
    parser.add_argument("-o", "--outfile", required=True, metavar="OUT.gguf", help="output file")
    add_qtype_arguments(parser)
    parser.add_argument("--name", default=None, help="general.name (default: directory name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def report(rep) -> None:
    """Print a one-paragraph summary of a WriteReport."""
    types = ", ".join(f"{n} {t}" for t, n in sorted(rep.types.items()))
    print(
        f"wrote {rep.path} ({rep.nbytes / 2**20:.1f} MiB of tensors; {rep.n_tensors} tensors: "
        f"{types})"
    )
    if rep.fallbacks:
        names = ", ".join(f"{n} ({t})" for n, t in rep.fallbacks)
        print(f"fell back from the requested type: {names}")


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run(args: argparse.Namespace) -> int:
    """Run the conversion."""
    from tribit.convert import DEFAULT_QTYPE, convert_hf

    _setup_logging()
    rep = convert_hf(
        args.hf_dir,
        args.outfile,
        qtype=args.qtype or DEFAULT_QTYPE,
        head=args.head,
        name=args.name,
        progress=not args.no_progress,
    )
    report(rep)
    return 0
