"""`tribit bench kernels ...` (kernel throughput) and `tribit bench -m MODEL | --layout NAME`
(a model, llama-bench style): the options and the printing; the benchmarks themselves are
`tribit.bench.kernels` and `tribit.bench.model`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tribit.bench import model as bm
from tribit.errors import TribitError

HELP = "benchmark the kernels (`tribit bench kernels`) or a model (`tribit bench -m MODEL`)"


def _int_list(what: str, minimum: int) -> Callable[[str], list[int]]:
    """argparse type of comma-separated integers >= `minimum` (at least one if minimum > 0)."""

    def parse(s: str) -> list[int]:
        try:
            vals = [int(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {s!r}"
            ) from None
        if (minimum > 0 and not vals) or any(v < minimum for v in vals):
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {s!r}")
        return vals

    return parse


_threads = _int_list("thread counts", 1)
_sizes = _int_list("sizes", 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`kernels` is an explicit first word; without it the model benchmark runs."""
    p.add_argument("what", nargs="?", choices=["kernels"], help="'kernels': kernel benchmark")
    p.add_argument("--json", action="store_true", help="print a JSON list of records")
    p.add_argument(
        "-t",
        "--threads",
        type=_threads,
        default=None,
        help="comma-separated thread counts (kernels default: 1,2; model: every CPU)",
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
    _add_model_arguments(p)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model-benchmark options (the kernel part defines --json, -t/--threads, --reps, --isa)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("-m", "--model", default=None, help="GGUF model file to benchmark")
    src.add_argument(
        "--layout",
        default=None,
        help="benchmark a cached dummy model of this layout (see `tribit dummy`)",
    )
    p.add_argument(
        "--qtype",
        default=None,
        help="--layout: ternary storage type (default: the layout's, else tq2_0)",
    )
    p.add_argument(
        "--head",
        default=None,
        dest="head",
        help="--layout: storage type of the embedding/head in the dummy file (f16, "
        "q8_0, q6_k, bf16, f32, q2_0, q1_0; default: the layout's, else f16)",
    )
    p.add_argument(
        "--head-type",
        default=None,
        choices=("q8_0", "q6_k"),
        help="repack an F32/F16/BF16 embedding/head at load into this type (smaller "
        "and faster, slightly lossy; default: the file's type)",
    )
    p.add_argument(
        "-p",
        "--n-prompt",
        type=_sizes,
        default=list(bm.DEFAULT_PROMPTS),
        help="prompt sizes for pp tests, comma-separated (default 128; 0: none)",
    )
    p.add_argument(
        "-n",
        "--n-gen",
        type=_sizes,
        default=list(bm.DEFAULT_GENS),
        help="token counts for tg tests, comma-separated (default 64; 0: none)",
    )
    p.add_argument(
        "-d",
        "--n-depth",
        type=_sizes,
        default=list(bm.DEFAULT_DEPTHS),
        help="context depths: every test also runs after this many tokens in the "
        "cache, comma-separated (default 0)",
    )
    p.add_argument(
        "-r",
        "--repetitions",
        type=int,
        default=None,
        help=f"model: repetitions per test (default {bm.DEFAULT_REPS}; --reps also works)",
    )
    p.add_argument("--md", action="store_true", help="print a markdown table")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt tokens")
    p.add_argument("--no-probe", action="store_true", help="skip the read-bandwidth probe")
    p.add_argument(
        "--profile", action="store_true", help="also print where each test's time goes, op by op"
    )
    p.add_argument(
        "--no-interleave", action="store_true", help="load one thread count at a time (less memory)"
    )


def _run_model(args: argparse.Namespace) -> int:
    """`tribit bench -m MODEL | --layout NAME`."""
    from tribit.bench import model as bm

    if not (args.model or args.layout):
        print(
            "usage: tribit bench (-m MODEL | --layout NAME) [-p 128,512] [-n 64,128] [-d 0,4096] "
            "[-t 1,2] [-r 5] [--json | --md]\n       tribit bench kernels ..."
        )
        return 0
    reps = args.repetitions
    if reps is None:  # --reps belongs to the kernel part; honour it when set explicitly
        reps = args.reps if getattr(args, "reps", 7) != 7 else bm.DEFAULT_REPS
    quiet = args.json
    say = None if quiet else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    if args.layout:
        path = bm.ensure_dummy(args.layout, qtype=args.qtype, head=args.head, progress=not quiet)
        name = f"dummy-{args.layout}"
    else:
        path = Path(args.model)
        if not path.is_file():
            raise TribitError(f"model file not found: {path}")
        name = None
    try:
        records = bm.bench_model(
            path,
            prompts=args.n_prompt,
            gens=args.n_gen,
            depths=args.n_depth,
            threads=args.threads,
            reps=reps,
            seed=args.seed,
            isa=args.isa,
            probe=not args.no_probe,
            interleave=False if args.no_interleave else None,
            model_name=name,
            progress=say,
            head_type=args.head_type,
        )
    except ValueError as e:
        raise TribitError(str(e)) from e
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    r0 = records[0]
    print(
        f"cpu: {r0['cpu']}  isa: {r0['isa']}  tribit {r0['version']} ({r0['commit']})  "
        f"model: {r0['path']} ({r0['bytes_per_token'] / 1e9:.3f} GB of weights read per token)"
    )
    bws = {r["threads"]: r["bw_gbps"] for r in records}
    if any(bws.values()):
        probed = ", ".join(f"{t} thr {b:.1f} GB/s" for t, b in bws.items())
        print(f"probed read bandwidth: {probed}")
    else:
        print("read bandwidth not probed (--no-probe)")
    print(
        f"median of {reps} reps; GB/s = weight + KV-cache bytes per token / time per token "
        "(tg); ratio = GB/s / probed bandwidth"
    )
    print(bm.format_table(records, markdown=args.md))
    if args.profile:
        print("\nshare of each test's median time per op:")
        print(bm.format_profile(records))
    return 0


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
            raise TribitError(str(e)) from e
    return _run_model(args)
