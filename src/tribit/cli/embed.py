"""`tribit embed -m MODEL "text" ...`: embeddings of texts, as JSON or a .npy file."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "embed texts with an embedding model (JSON on stdout, or -o FILE.npy / FILE.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, help="GGUF embedding model")
    p.add_argument("texts", nargs="*", help="texts to embed (one vector each)")
    p.add_argument(
        "-f",
        "--file",
        default=None,
        help="read texts from a UTF-8 file, one per line (empty lines skipped)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="write the vectors here: .npy (float32, n x dim) or JSON",
    )
    p.add_argument(
        "--pooling",
        choices=("last", "mean", "cls"),
        default=None,
        help="override the file's pooling_type (BitNet-embedding: last)",
    )
    p.add_argument(
        "--prefix", default="", help='text put before every input, e.g. "query: " (docs/USAGE.md)'
    )
    p.add_argument(
        "--prompt-name",
        default=None,
        help='put the file\'s prompt of this name before every input, e.g. "query" (a '
        "checkpoint's sentence-transformers prompts, kept by tribit convert)",
    )
    p.add_argument("--no-normalize", action="store_true", help="skip the L2 normalisation")
    p.add_argument(
        "--dimensions", type=int, default=None, help="keep the first N dimensions (renormalised)"
    )
    p.add_argument("-t", "--threads", type=int, default=None, help="worker threads")
    p.add_argument(
        "-np",
        "--parallel",
        type=int,
        default=8,
        help="texts per forward (sequence slots; default 8)",
    )
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        help="context per text (default: the trained one, at most 4096)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    import tribit
    from tribit.errors import TribitError

    from .util import read_text_file

    texts = list(args.texts)
    if args.file:
        texts += [
            line for line in read_text_file(args.file, "text file").splitlines() if line.strip()
        ]
    if not texts:
        raise TribitError("no texts to embed: give them as arguments or with -f FILE")
    if not Path(args.model).is_file():
        raise TribitError(f"model file not found: {args.model}")
    n_seq = max(1, min(int(args.parallel), len(texts)))
    model = tribit.load(args.model, n_threads=args.threads, n_ctx=args.ctx_size, n_seq=n_seq)
    vecs = model.embed(
        [args.prefix + t for t in texts],
        pooling=args.pooling,
        normalize=not args.no_normalize,
        prompt_name=args.prompt_name,
    )
    if args.dimensions is not None:
        if not 1 <= args.dimensions <= vecs.shape[1]:
            raise TribitError(f"--dimensions must be between 1 and {vecs.shape[1]}")
        vecs = vecs[:, : args.dimensions]
        if not args.no_normalize:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        vecs = vecs.astype(np.float32)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, vecs)
        print(f"wrote {vecs.shape[0]} x {vecs.shape[1]} float32 to {args.output}", file=sys.stderr)
        return 0
    doc = {
        "model": Path(args.model).name,
        "dim": int(vecs.shape[1]),
        "data": [
            {"index": i, "text": t, "embedding": v.tolist()}
            for i, (t, v) in enumerate(zip(texts, vecs, strict=True))
        ],
    }
    if args.output:
        Path(args.output).write_text(json.dumps(doc))
    else:
        print(json.dumps(doc))
    return 0
