#!/usr/bin/env python
"""tribit vs mainline llama.cpp (through llama-cpp-python) on the same dummy GGUF file.

    pip install llama-cpp-python          # compiles llama.cpp (10-20 min on 2 cores)
    python benchmarks/compare_peers.py --layout 125M --qtype tq2_0,tq1_0 -p 128 -n 64 -t 2 -r 5

Both engines load the same file (a `tribit dummy` layout in TQ2_0 or TQ1_0, the mainline
ternary types) and run the same random prompt tokens: pp = the prompt in one batch from an
empty cache, tg = tokens one at a time from an empty cache. The runs alternate A B A B, so
the noise of a shared machine hits both alike, and the table reports medians and the ratio
tribit / llama.cpp (> 1: tribit faster), plus the median of the per-round ratios, which is
the more robust figure when the load changes during the run.

Layouts whose architecture mainline llama.cpp does not know (`bitnet-b1.58`, the 2B-4T
shape) are written as a `bitnet`-arch twin with the same shapes; both engines run the twin.
The numerics differ (mainline quantizes activations per 256-block, Q8_K, and is not
bit-exact to BitNet; tribit is), the amount of work and memory traffic do not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

MAINLINE_ARCHS = ("bitnet", "llama")


def _need_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit(
            "compare_peers: llama-cpp-python is missing, so there is no llama.cpp to compare "
            "with.\nInstall it with `pip install llama-cpp-python` (it compiles llama.cpp from "
            "source: 10-20 minutes on 2 cores), then run this script again."
        )
    return llama_cpp


def model_file(layout: str, qtype: str, seed: int = 0) -> Path:
    """A cached dummy file that both engines can read (mainline arch twin if needed)."""
    from tribit.bench.model import cache_dir, ensure_dummy
    from tribit.convert import write_gguf
    from tribit.convert.dummy import dummy_plan
    from tribit.convert.layouts import get_layout

    lay = get_layout(layout)
    if lay.arch in MAINLINE_ARCHS:
        return ensure_dummy(lay.name, qtype=qtype, seed=seed)
    path = cache_dir() / f"dummy-{lay.name}-{qtype}-f16-s{seed}-mainline.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        twin = dataclasses.replace(lay, arch="bitnet")
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            write_gguf(dummy_plan(twin, seed=seed), tmp, qtype=qtype, head="f16")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


class Tribit:
    name = "tribit"

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import tribit

        self.m = tribit.load(path, n_threads=threads, n_ctx=n_ctx)
        self.n_vocab = self.m.config.n_vocab

    def pp(self, toks: list[int]) -> None:
        self.m.reset()
        self.m.forward(toks, 0, 0, logits="last")

    def tg(self, toks: list[int]) -> None:
        self.m.reset()
        for i, t in enumerate(toks):
            self.m.forward([t], i, 0, logits="last")


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int):
        llama_cpp = _need_llama_cpp()
        self.m = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        self.n_vocab = self.m.n_vocab()
        self.version = getattr(llama_cpp, "__version__", "?")

    def pp(self, toks: list[int]) -> None:
        self.m.reset()  # n_tokens = 0: eval() then drops every cache entry past position 0
        self.m.eval(toks)

    def tg(self, toks: list[int]) -> None:
        self.m.reset()
        for t in toks:
            self.m.eval([t])


def _timed(fn, toks) -> float:
    t0 = time.perf_counter()
    fn(toks)
    return time.perf_counter() - t0


def compare(path: Path, prompts, gens, threads: int, reps: int, seed: int) -> list[dict]:
    """Alternating runs of both engines on one file; one record per test."""
    import numpy as np

    n_ctx = max([*prompts, *gens]) + 8
    engines = [Tribit(path, threads, n_ctx), LlamaCpp(path, threads, n_ctx, max(prompts + [1]))]
    n_vocab = min(e.n_vocab for e in engines)
    rng = np.random.default_rng(seed)
    tests = [("pp", n) for n in prompts] + [("tg", n) for n in gens]
    times = {(e.name, t): [] for e in engines for t in tests}
    for e in engines:  # warm-up: page the weights in, start the thread pools
        e.pp(rng.integers(0, n_vocab, min(prompts + [16])).tolist())
        e.tg(rng.integers(0, n_vocab, 2).tolist())
    for r in range(reps):
        for kind, n in tests:
            toks = rng.integers(0, n_vocab, n).tolist()  # the same tokens for both engines
            order = engines if r % 2 == 0 else engines[::-1]  # A B, then B A
            for e in order:
                fn = e.pp if kind == "pp" else e.tg
                times[(e.name, (kind, n))].append(_timed(fn, toks))
    out = []
    for kind, n in tests:
        a, b = times[("tribit", (kind, n))], times[("llama.cpp", (kind, n))]
        per_round = [y / x for x, y in zip(a, b, strict=True)]  # tribit speed / llama speed
        out.append(
            {
                "test": f"{kind}{n}",
                "threads": threads,
                "file": str(path),
                "tribit_tps": n / statistics.median(a),
                "llama_cpp_tps": n / statistics.median(b),
                "ratio": statistics.median(b) / statistics.median(a),
                "ratio_per_round": statistics.median(per_round),
                "ratio_min": min(per_round),
                "ratio_max": max(per_round),
                "reps": reps,
                "llama_cpp_python": engines[1].version,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", default="125M", help="tribit dummy layout(s), comma-separated")
    ap.add_argument("--qtype", default="tq2_0", help="tq2_0 and/or tq1_0, comma-separated")
    ap.add_argument("-p", default="128", help="prompt sizes, comma-separated")
    ap.add_argument("-n", default="64", help="generation lengths, comma-separated")
    ap.add_argument("-t", default="2", help="thread counts, comma-separated")
    ap.add_argument("-r", type=int, default=5, help="rounds (each runs both engines)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON records")
    args = ap.parse_args(argv)
    _need_llama_cpp()
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    records = []
    for layout in args.layout.split(","):
        for qtype in args.qtype.split(","):
            path = model_file(layout, qtype, args.seed)
            for t in ints(args.t):
                print(f"{layout} {qtype} threads={t}: {path.name}", file=sys.stderr)
                for rec in compare(path, ints(args.p), ints(args.n), t, args.r, args.seed):
                    rec.update(layout=layout, qtype=qtype)
                    records.append(rec)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    print(f"median of {args.r} alternating rounds; ratio = tribit t/s / llama.cpp t/s")
    print(
        "| layout | qtype | threads | test | tribit t/s | llama.cpp t/s | ratio | "
        "ratio per round (min-max) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(
            f"| {r['layout']} | {r['qtype']} | {r['threads']} | {r['test']} | "
            f"{r['tribit_tps']:.2f} | {r['llama_cpp_tps']:.2f} | {r['ratio']:.2f} | "
            f"{r['ratio_per_round']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
