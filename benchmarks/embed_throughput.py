"""Embedding throughput: texts per second at a fixed text length, through `Model.embed`.

A benchmark, not a test:

    python -m tribit dummy --layout bitnet-embedding-0.6b --qtype i2_s -o /tmp/be06.gguf
    python benchmarks/embed_throughput.py --model /tmp/be06.gguf --tokens 128 --threads 1 2

Method: `--texts` random texts of exactly `--tokens` token ids each (the last one the EOS
the model's pooling needs), embedded by one `Model.embed` call on a model loaded with
`--parallel` sequence slots, so that `--parallel` texts share each forward (the token budget
of a forward is `--parallel x --tokens`). One warm-up call, then `--reps` timed calls; the
median wall time gives texts/s and prompt tokens/s. The CPU line is `tribit info`'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import tribit


def cpu_line() -> str:
    from tribit.bench.kernels import system_info

    info = system_info()
    return str(info.get("cpu") or info)


def run(
    model_path: str, n_tokens: int, n_texts: int, threads: int, parallel: int, reps: int
) -> dict:
    m = tribit.load(model_path, n_threads=threads, n_seq=parallel, n_ctx=max(n_tokens, 256))
    rng = np.random.default_rng(0)
    eos = m.tokenizer.eos_id
    texts = [
        list(rng.integers(300, m.config.n_vocab, n_tokens - 1)) + [eos] for _ in range(n_texts)
    ]
    m.embed(texts[:parallel], batch_tokens=parallel * n_tokens)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        v = m.embed(texts, batch_tokens=parallel * n_tokens)
        times.append(time.perf_counter() - t0)
    assert v.shape == (n_texts, m.config.n_embd)
    t = statistics.median(times)
    return {
        "threads": threads,
        "parallel": parallel,
        "tokens": n_tokens,
        "texts": n_texts,
        "texts_per_s": round(n_texts / t, 2),
        "tokens_per_s": round(n_texts * n_tokens / t, 1),
        "spread_s": round(max(times) - min(times), 3),
        "isa": m.isa,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = [run(a.model, a.tokens, a.texts, t, a.parallel, a.reps) for t in a.threads]
    if a.json:
        print(json.dumps({"cpu": cpu_line(), "rows": rows}, indent=1))
        return
    print(f"cpu: {cpu_line()}")
    print("| threads | texts/forward | tokens/text | texts/s | tokens/s | spread (s) | isa |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['threads']} | {r['parallel']} | {r['tokens']} | {r['texts_per_s']} | "
            f"{r['tokens_per_s']} | {r['spread_s']} | {r['isa']} |"
        )


if __name__ == "__main__":
    main()
