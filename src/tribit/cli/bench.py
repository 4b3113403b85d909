"""`tribit bench kernels ...` (kernel throughput) and `tribit bench -m MODEL` (model).

The model benchmark lives in `tribit.bench.model` (written separately); when that module
exists it may define `add_arguments(parser)` to add its options, and must define
`run(args) -> int`. Until then `tribit bench -m ...` says it is not available.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import import_module
from types import ModuleType

HELP = "benchmark the kernels (`tribit bench kernels`) or a model (`tribit bench -m MODEL`)"


def _model_bench() -> ModuleType | None:
    try:
        return import_module("tribit.bench.model")
    except ModuleNotFoundError as e:
        if e.name == "tribit.bench.model":
            return None
        raise


def _int_list(s: str) -> list[int]:
    try:
        vals = [int(v) for v in s.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {s!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`kernels` is an explicit first word; without it the model benchmark runs."""
    p.add_argument("what", nargs="?", choices=["kernels"], help="'kernels': kernel benchmark")
    p.add_argument("--json", action="store_true", help="print a JSON list of records")
    p.add_argument(
        "-t",
        "--threads",
        type=_int_list,
        default=None,
        help="comma-separated thread counts (kernels default: 1,2)",
    )
    p.add_argument("--reps", type=int, default=7, help="repetitions per measurement (median)")
    p.add_argument(
        "--isa",
        default=None,
        help="ISA to use (kernels: comma-separated list or 'all'; default: the selected one)",
    )
    p.add_argument(
        "--ops", default="gemv,gemm,head", help="kernels: subset of gemv,gemm,head (default: all)"
    )
    p.add_argument("--gemm-n", type=int, default=128, help="kernels: tokens for the GEMM")
    model = _model_bench()
    if model is not None and hasattr(model, "add_arguments"):
        model.add_arguments(p)
    else:
        p.add_argument("-m", "--model", default=None, help="GGUF model to benchmark")
        p.add_argument("--layout", default=None, help="weight layout for the model benchmark")


def _run_kernels(args: argparse.Namespace) -> int:
    from tribit.bench import kernels as kb

    info = kb.system_info()
    if args.isa == "all":
        isas = info["runnable_isas"]
    else:
        isas = args.isa.split(",") if args.isa else None
    progress = None if args.json else (lambda s: print(f"  timing {s}", file=sys.stderr))
    records = kb.bench_kernels(
        threads=args.threads or [1, 2],
        reps=max(1, args.reps),
        isas=isas,
        ops=[o for o in args.ops.split(",") if o],
        gemm_n=args.gemm_n,
        progress=progress,
    )
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(f"cpu: {info['cpu']}  features: {' '.join(info['features'])}")
        print(
            f"median of {args.reps} reps; GB/s = weight bytes / time; "
            "ratio = GB/s / probed read bandwidth; roof = GMAC/s / probed multiply-accumulate "
            "peak; after '|' the same on CPU time per thread"
        )
        print(kb.format_table(records))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatches to the kernel or the model benchmark."""
    if args.what == "kernels":
        try:
            return _run_kernels(args)
        except ValueError as e:
            from tribit.errors import TribitError

            raise TribitError(str(e)) from e
    model = _model_bench()
    if model is None:
        if getattr(args, "model", None) or getattr(args, "layout", None):
            print("model benchmark not available yet", file=sys.stderr)
            return 1
        print(
            "usage: tribit bench kernels [--json] [-t 1,2] [--reps N] [--isa ISA|all]\n"
            "       tribit bench -m MODEL (model benchmark not available yet)"
        )
        return 0
    return int(model.run(args) or 0)
