"""Embedding throughput: texts per second at a fixed text length, through `Model.embed`.

A benchmark, not a test:

    python -m tribit dummy --layout bitnet-embedding-0.6b --qtype i2_s -o /tmp/be06.gguf
    python benchmarks/embed_throughput.py --model /tmp/be06.gguf --tokens 128 --threads 1 2

Method: `--texts` random texts of exactly `--tokens` token ids each (the last one the EOS
the model's pooling needs), embedded by one `Model.embed` call on a model loaded with
`--parallel` sequence slots, so that `--parallel` texts share each forward (the token budget
of a forward is `--parallel x --tokens`). One warm-up call, then `--reps` timed calls; the
median wall time gives texts/s and prompt tokens/s. The CPU line is `tribit info`'s.

Beside mainline llama.cpp on the same file (a Qwen3-block file it can read: TQ2_0, Q2_0, ...,
with a pooling type): `--peer LLAMA_BENCH[:MODEL]` runs `llama-bench -embd 1 -p TOKENS -n 0`
(one text of TOKENS tokens per forward, pooled) at each thread count, and tribit is then also
run with one text per forward (`--parallel 1` work), so both rows do the same work. Engines
alternate, the order flipping every round (`--rounds`); medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def run_peer(binary: str, model_path: str, n_tokens: int, threads: int, reps: int) -> dict:
    """llama-bench in embedding mode: one sequence of `n_tokens` per forward, pooled."""
    cmd = [binary, "-m", model_path, "-embd", "1", "-p", str(n_tokens), "-n", "0"]
    cmd += ["-t", str(threads), "-r", str(reps), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        err = out.stderr[-2000:]
        raise SystemExit(f"embed_throughput: the peer failed ({out.returncode}):\n{err}")
    recs = json.loads(out.stdout[out.stdout.index("[") :])
    tps = statistics.median(recs[0].get("samples_ts") or [recs[0]["avg_ts"]])
    return {"threads": threads, "texts_per_s": round(tps / n_tokens, 2), "tokens_per_s": tps}


def compare(a: argparse.Namespace) -> None:
    """tribit (one text per forward, and --parallel texts) against the peer, A B / B A."""
    binary, _, peer_model = a.peer.partition(":")
    peer_model = peer_model or a.model
    for p in (binary, peer_model):
        if not os.path.exists(p):
            raise SystemExit(f"embed_throughput: {p} does not exist")
    engines = {
        "tribit 1 text/forward": lambda t: run(a.model, a.tokens, a.texts, t, 1, a.reps),
        f"tribit {a.parallel} texts/forward": lambda t: run(
            a.model, a.tokens, a.texts, t, a.parallel, a.reps
        ),
        "llama.cpp 1 text/forward": lambda t: run_peer(binary, peer_model, a.tokens, t, a.reps),
    }
    got: dict[tuple[str, int], list[float]] = {}
    for rnd in range(a.rounds):
        names = list(engines) if rnd % 2 == 0 else list(engines)[::-1]
        for t in a.threads:
            for name in names:
                got.setdefault((name, t), []).append(engines[name](t)["texts_per_s"])
    print(f"cpu: {cpu_line()}")
    print(f"{a.tokens} tokens a text, texts/s, median of {a.rounds} rounds")
    print("| threads | " + " | ".join(engines) + " | tribit / llama.cpp (1 text) |")
    print("| ---: |" + " ---: |" * (len(engines) + 1))
    peer = "llama.cpp 1 text/forward"
    for t in a.threads:
        med = {n: statistics.median(got[(n, t)]) for n in engines}
        ratio = med["tribit 1 text/forward"] / med[peer]
        cells = " | ".join(f"{med[n]:.2f}" for n in engines)
        print(f"| {t} | {cells} | {ratio:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--peer", help="mainline llama.cpp's llama-bench binary[:model file]")
    ap.add_argument("--rounds", type=int, default=2, help="with --peer: rounds over the engines")
    a = ap.parse_args()
    if a.peer:
        compare(a)
        return
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
