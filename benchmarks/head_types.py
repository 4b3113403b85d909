"""Decode speed of one model with its file's head and with smaller heads, interleaved.

Loads the model once per head type (`tribit.load(head_type=...)`) and times generation
steps of each in turn, round after round, so that a shared, noisy machine slows them
alike; prints per head type the median tokens/s over rounds (wall clock and per CPU
second of this process) and the ratio to the first type.

    python benchmarks/head_types.py MODEL.gguf [--types none,q6_k] [-t 1,2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tribit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--types", default="none,q6_k", help="head types; 'none': the file's")
    p.add_argument("-t", "--threads", default="1", help="comma-separated thread counts")
    p.add_argument("-n", "--n-gen", type=int, default=16, help="tokens per timed segment")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    types = [None if t == "none" else t for t in a.types.split(",")]
    rng = np.random.default_rng(0)
    for threads in (int(t) for t in a.threads.split(",")):
        models = {}
        for ht in types:
            t0 = time.perf_counter()
            models[ht] = tribit.load(a.model, n_threads=threads, n_ctx=a.n_gen + 8, head_type=ht)
            print(
                f"threads {threads}: loaded head {models[ht].head_type} "
                f"in {time.perf_counter() - t0:.1f} s"
            )
        wall: dict = {ht: [] for ht in types}
        cpu: dict = {ht: [] for ht in types}
        n_vocab = next(iter(models.values())).config.n_vocab
        for _ in range(a.rounds + 1):  # the first round warms up and is dropped
            toks = rng.integers(0, n_vocab, a.n_gen).tolist()
            for ht, m in models.items():
                m.reset()
                w0, c0 = time.perf_counter(), time.process_time()
                for i, tok in enumerate(toks):
                    m.forward([tok], i, 0)
                wall[ht].append(a.n_gen / (time.perf_counter() - w0))
                cpu[ht].append(a.n_gen / (time.process_time() - c0))
        base = None
        for ht in types:
            w, c = wall[ht][1:], cpu[ht][1:]
            mw, mc = statistics.median(w), statistics.median(c)
            base = base or (mw, mc)
            print(
                f"threads {threads} head {models[ht].head_type:5}: {mw:6.2f} tok/s "
                f"(min {min(w):.2f}, max {max(w):.2f}; x{mw / base[0]:.2f})  "
                f"{mc:6.2f} tok per CPU-s (x{mc / base[1]:.2f})"
            )
        del models


if __name__ == "__main__":
    main()
