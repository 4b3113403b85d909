"""`tribit train babi`: train the small bAbI model (PyTorch, QAT) and export GGUF."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a small ternary model on bAbI-style stories (needs torch: tribit[train])"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=["babi"], help="what to train on")
    p.add_argument("--out", required=True, type=Path, help="output GGUF path")
    p.add_argument("--steps", type=int, default=6000, help="optimizer steps (default 6000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256, help="multiple of 256")
    p.add_argument("--n-ff", type=int, default=256, help="multiple of 256")
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-head-kv", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512, help="BPE vocabulary size")
    p.add_argument(
        "--prompt-weight",
        type=float,
        default=0.25,
        help="loss weight of story tokens (answer tokens weigh 1; default 0.25)",
    )
    p.add_argument(
        "--tasks",
        default="1,1,1,1,6,2,3",
        help="bAbI tasks of the training sequences, round robin; a task listed "
        "twice comes twice as often (default 1,1,1,1,6,2,3)",
    )
    p.add_argument(
        "--questions",
        type=int,
        default=3,
        help="questions packed per task-1/6 story, each branching off the story "
        "(default 3; 1: one question per sequence)",
    )
    p.add_argument(
        "--not-last",
        type=float,
        default=0.0,
        help="share of task-1/6 stories whose questions skip the people in the "
        "place named last, so that recency alone cannot answer (default 0)",
    )
    p.add_argument(
        "--fact-weight",
        type=float,
        default=1.0,
        help="weight of the supporting-fact loss, which teaches one attention head "
        "to look at the asked person's last move (0: off; default 1)",
    )
    p.add_argument(
        "--fact-layer", type=int, default=None, help="layer of those heads (default n_layer // 2)"
    )
    p.add_argument(
        "--fact-heads",
        default="0",
        help="the supervised heads of that layer, comma-separated (default 0)",
    )
    p.add_argument(
        "--prompt-weight-from",
        type=int,
        default=0,
        help="first step that uses --prompt-weight (before it: answers only)",
    )
    p.add_argument(
        "--ckpt-dir",
        type=Path,
        default=None,
        help="checkpoints and logs (default: OUT with suffix .ckpt)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="GGUF",
        help="fine-tune: start from this exported file's weights and tokenizer "
        "(its shape options win over --n-layer etc.)",
    )
    p.add_argument("--embd-type", choices=["f32", "f16"], default="f32")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from tribit.data import babi
    from tribit.errors import TribitError
    from tribit.formats.keys import Tribit

    try:
        from tribit.train.babi import TrainSettings, model_metadata, train
        from tribit.train.export import export_gguf, provenance
        from tribit.train.model import BitNetConfig
        from tribit.train.trainer import load_checkpoint
    except ImportError as e:
        raise TribitError(
            f"training needs torch ({e}); install it with: pip install 'tribit[train]'"
        ) from e
    cfg = BitNetConfig(
        n_layer=args.n_layer,
        n_embd=args.n_embd,
        n_ff=args.n_ff,
        n_head=args.n_head,
        n_head_kv=args.n_head_kv,
    )
    try:
        cfg.validate()
    except ValueError as e:
        raise TribitError(str(e)) from e
    if not 0.0 <= args.not_last <= 1.0:
        raise TribitError(f"--not-last must be in [0, 1], got {args.not_last}")
    if args.fact_weight < 0:
        raise TribitError(f"--fact-weight must be >= 0, got {args.fact_weight}")
    if args.fact_layer is not None and not 0 <= args.fact_layer < args.n_layer:
        raise TribitError(f"--fact-layer must be in [0, {args.n_layer - 1}], got {args.fact_layer}")
    try:
        fact_heads = tuple(int(h) for h in args.fact_heads.split(","))
    except ValueError as e:
        raise TribitError(f"bad --fact-heads {args.fact_heads!r}: {e}") from e
    if len(set(fact_heads)) != len(fact_heads) or not all(0 <= h < args.n_head for h in fact_heads):
        raise TribitError(
            f"--fact-heads must be distinct heads in [0, {args.n_head - 1}], "
            f"got {args.fact_heads!r}"
        )
    if min(args.steps, args.batch, args.threads, args.questions) <= 0:
        raise TribitError("--steps, --batch, --threads and --questions must be positive")
    try:
        tasks = babi.parse_tasks(args.tasks)
    except ValueError as e:
        raise TribitError(f"bad --tasks: {e}") from e
    st = TrainSettings(
        steps=args.steps,
        tasks=tasks,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        vocab_size=args.vocab,
        prompt_weight=args.prompt_weight,
        prompt_weight_from=args.prompt_weight_from,
        questions=args.questions,
        p_not_last=args.not_last,
        fact_weight=args.fact_weight,
        fact_layer=args.fact_layer,
        fact_heads=fact_heads,
        init=str(args.init) if args.init else None,
    )
    ckpt_dir = args.ckpt_dir or args.out.with_suffix(".ckpt")
    ckpt = train(
        ckpt_dir,
        cfg,
        st,
        progress=not args.no_progress,
        resume=args.resume,
        log_file=ckpt_dir / "log.jsonl",
    )
    model, ck = load_checkpoint(ckpt)
    last = ck["log"][-1] if ck["log"] else {}
    export_gguf(
        model,
        ck["tokenizer"],
        args.out,
        embd_type=args.embd_type,
        extra_md={
            **provenance(int(ck["step"]), args.seed),
            **({Tribit.TRAIN_INIT: args.init.name} if args.init else {}),
            **model_metadata(),
        },
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {ck['step']} steps, "
        f"last loss {last.get('loss')}, held-out exact-answer accuracy "
        f"{last.get('heldout_acc')}; checkpoint {ckpt}"
    )
    return 0
