"""`tribit eval babi`: exact-answer accuracy per bAbI task on held-out questions with
greedy decoding in tribit, and optionally the same questions through the PyTorch
training-time forward of a checkpoint, with their question-by-question agreement."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "answer accuracy per bAbI task on held-out questions (tribit vs PyTorch)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=["babi"], help="what to evaluate on")
    p.add_argument(
        "-m",
        "--model",
        type=Path,
        default=None,
        help="GGUF model (default: the embedded babi-tiny model)",
    )
    p.add_argument("--n", type=int, default=1000, help="number of questions (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out questions")
    p.add_argument("--tasks", default="1,2,3,6", help="comma-separated bAbI task numbers")
    p.add_argument(
        "--split",
        choices=["heldout", "shapes"],
        default="heldout",
        help="held-out words: the heldout lists (default), or words of other shapes "
        "(long, rare letters, unseen places) in stories of 4-8 sentences",
    )
    p.add_argument(
        "--torch",
        type=Path,
        default=None,
        metavar="CKPT",
        help="also answer with this PyTorch checkpoint and report agreement",
    )
    p.add_argument("-t", "--threads", type=int, default=None)
    p.add_argument(
        "--kv-type",
        choices=["f32", "f16"],
        default="f32",
        help="KV cache type (default f32: the comparison with PyTorch is exact math)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--show-errors", type=int, default=0, metavar="K", help="print up to K wrong answers"
    )


def run(args: argparse.Namespace) -> int:
    import tribit
    from tribit.data import babi, babi_eval
    from tribit.errors import TribitError

    try:
        questions = babi_eval.held_out_questions(
            args.n, args.seed, babi.parse_tasks(args.tasks), args.split
        )
    except ValueError as e:
        raise TribitError(f"bad --tasks: {e}") from e
    if args.n <= 0:
        raise TribitError("--n must be positive")
    model = tribit.load(args.model, n_threads=args.threads, kv_type=args.kv_type)
    answer_a = babi_eval.tribit_answerer(model)
    answer_b, name_b = None, None
    if args.torch is not None:
        try:
            from tribit.train.evaluate import torch_answerer
        except ImportError as e:
            raise TribitError(f"--torch needs torch ({e}): pip install 'tribit[train]'") from e
        answer_b, name_b = torch_answerer(args.torch, threads=args.threads), "torch"
    seed_answer = answer_a(babi.SEED_PROMPT)
    t0 = time.time()

    def progress(i: int) -> None:
        if sys.stderr.isatty() and (i % 50 == 0 or i == args.n):
            print(f"\r{i}/{args.n}", end="", file=sys.stderr, flush=True)

    res = babi_eval.evaluate(answer_a, questions, answer_b, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"model: {args.model or 'embedded babi-tiny'}; {args.n} held-out questions "
        f"(split {args.split}), seed {args.seed}; greedy; {time.time() - t0:.1f} s"
    )
    print(babi_eval.format_report(res, "tribit", name_b))
    verdict = "correct" if babi.is_correct(seed_answer, babi.SEED) else "WRONG"
    print(f"seed prompt -> {seed_answer!r} ({verdict})")
    wrong = [(ex, a, b) for ex, a, b in res.rows if not babi.is_correct(a, ex)]
    for ex, a, b in wrong[: args.show_errors]:
        print(
            f"--- task {ex.task}: {ex.prompt!r}\n    expected {ex.answer!r}, tribit {a!r}"
            + (f", torch {b!r}" if b is not None else "")
        )
    if args.json:
        tot = res.total()
        args.json.write_text(
            json.dumps(
                {
                    "n": args.n,
                    "seed": args.seed,
                    "split": args.split,
                    "seed_prompt_answer": seed_answer,
                    "tasks": {
                        str(t): {
                            "n": s.n,
                            "tribit": s.accuracy,
                            "torch": s.accuracy_b if name_b else None,
                            "agree": s.agree if name_b else None,
                        }
                        for t, s in res.tasks.items()
                    },
                    "all": {
                        "n": tot.n,
                        "tribit": tot.accuracy,
                        "agree": tot.agree if name_b else None,
                    },
                },
                indent=1,
            )
        )
    return 0
