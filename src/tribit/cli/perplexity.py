"""`tribit perplexity`: perplexity of a text file, computed like llama-perplexity."""

from __future__ import annotations

import argparse
import json
import sys

from tribit.cli.util import add_head_type_argument

HELP = "perplexity of a text file (llama-perplexity method: chunks of n_ctx, second half scored)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tribit perplexity`."""
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the embedded one)")
    p.add_argument("-f", "--file", required=True, help="text file to score")
    p.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        help="tokens per chunk (default 512, like llama-perplexity)",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        help="windows start every N tokens and their last N tokens are scored "
        "(llama.cpp --ppl-stride); default: chunks, second half scored",
    )
    p.add_argument(
        "-b",
        "--batch",
        type=int,
        default=None,
        help="tokens per forward call within a chunk (default: the whole chunk)",
    )
    p.add_argument("--chunks", type=int, default=None, help="score at most this many chunks")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all CPUs)")
    add_head_type_argument(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the model, tokenize the file, score it."""
    import tribit
    from tribit.bench.perplexity import model_perplexity
    from tribit.cli.util import read_text_file
    from tribit.errors import TribitError

    text = read_text_file(args.file, "text file")
    if args.ctx_size is not None and args.ctx_size < 4:
        raise TribitError(f"-c must be >= 4, got {args.ctx_size}")
    n_ctx = args.ctx_size or 512
    model = tribit.load(args.model, n_threads=args.threads, n_ctx=n_ctx, head_type=args.head_type)
    bar = None
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="chunk", file=sys.stderr, dynamic_ncols=True)

        def progress(done: int, total: int, ppl: float) -> None:
            if bar.total != total:
                bar.total = total
            bar.set_postfix_str(f"ppl {ppl:.4f}")
            bar.update(done - bar.n)

    try:
        res = model_perplexity(
            model,
            text=text,
            n_ctx=n_ctx,
            stride=args.stride,
            batch=args.batch,
            max_chunks=args.chunks,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(res.as_dict(), indent=1))
        return 0
    how = f"stride {res.stride}" if res.stride else "second half of each chunk"
    print(
        f"{res.n_tokens} tokens, {res.n_chunks} chunks of {res.n_ctx} ({how}), "
        f"{res.n_scored} scored in {res.seconds:.2f} s"
    )
    print(f"Final estimate: PPL = {res.ppl:.4f} +/- {res.ppl_err:.5f}")
    return 0
