#!/usr/bin/env python
"""tribit against other engines' `llama-bench` binaries on the same machine, in one run.

    TRIBIT_PEERS="bitnet.cpp I2_S=/opt/bitnet/build/bin/llama-bench:/models/2b4t-i2_s.gguf;\
    ik_llama.cpp IQ2_BN_R4=/opt/ik/build/bin/llama-bench:/models/2b4t-iq2_bn_r4.gguf" \
    python benchmarks/bench_peers.py -m /models/2b4t-tq2_0.gguf -p 128 -n 32 -t 1,2 -r 3 --rounds 2

Every engine runs as a process of its own (`tribit bench --json`, `llama-bench -o json`),
one after another, and the order flips every round (A B C, then C B A), so the load of a
shared machine hits them alike. Each round's figure is the engine's median of `-r` reps;
the table reports the median over rounds per engine and test, and tribit's speed divided by
each peer's. The files should carry the same weights (convert one F16 dummy with each
engine's quantizer); the numerics differ between engines, the work and the memory traffic
do not. The machine's roofs are probed in the same run: read bandwidth (tribit's probe) and
the multiply-accumulate peak of the ISA tribit runs, so `roof` says how far each pp figure is
from the ternary GEMM's compute bound (`--macs-per-token`, 2.08e9 for the 2B-4T layout).

Peers come from --peer NAME=BIN:MODEL (repeatable) or the TRIBIT_PEERS variable (';'
between peers). Their code and build scripts stay outside this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Engine:
    name: str
    cmd: list[str]  # without the test arguments
    kind: str  # "tribit" or "llama-bench"


def parse_peer(spec: str) -> Engine:
    name, sep, rest = spec.partition("=")
    binary, sep2, model = rest.rpartition(":")
    if not (sep and sep2 and name.strip() and binary and model):
        raise SystemExit(f"bench_peers: a peer is NAME=BIN:MODEL, got {spec!r}")
    for p in (binary, model):
        if not os.path.exists(p):
            raise SystemExit(f"bench_peers: {p} does not exist (peer {name!r})")
    return Engine(name.strip(), [binary, "-m", model], "llama-bench")


def run_engine(e: Engine, prompt: int, gen: int, threads: list[int], reps: int) -> dict:
    """(test, threads) -> tokens/s (the engine's own median or mean of `reps`)."""
    t = ",".join(map(str, threads))
    if e.kind == "tribit":
        cmd = [
            *e.cmd,
            "-p",
            str(prompt),
            "-n",
            str(gen),
            "-t",
            t,
            "-r",
            str(reps),
            "--json",
            "--no-probe",
        ]
    else:
        cmd = [*e.cmd, "-p", str(prompt), "-n", str(gen), "-t", t, "-r", str(reps), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_peers: {e.name} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    text = out.stdout
    recs = json.loads(text[text.index("[") :])  # llama-bench may print a line before the JSON
    res = {}
    for r in recs:
        if e.kind == "tribit":
            res[(r["test"], r["threads"])] = r["tokens_per_s"]
        else:
            test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
            samples = r.get("samples_ts") or [r["avg_ts"]]
            res[(test, int(r["n_threads"]))] = statistics.median(samples)
    return res


def probes(threads: list[int]) -> dict:
    """The machine's roofs, probed now: read bandwidth (GB/s, wall) and the multiply peak
    (GMAC/s) of the instructions tribit's selected GEMM uses."""
    from tribit.model.native import probe_bandwidth, probe_compute, system_info

    info = system_info()
    isa = os.environ.get("TRIBIT_ISA") or info["selected_isa"]
    out = {"cpu": info["cpu"], "isa": isa, "read_gbps": {}, "mac_gmacs": {}}
    for t in threads:
        out["read_gbps"][t] = probe_bandwidth(t)[0]
        out["mac_gmacs"][t] = probe_compute(isa, t)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True, help="tribit's GGUF file")
    ap.add_argument("--peer", action="append", default=[], help="NAME=LLAMA_BENCH:MODEL")
    ap.add_argument("-p", type=int, default=128, help="prompt size")
    ap.add_argument("-n", type=int, default=32, help="generated tokens")
    ap.add_argument("-t", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("-r", type=int, default=3, help="reps inside each engine run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all engines")
    ap.add_argument(
        "--macs-per-token",
        type=float,
        default=2.08e9,
        help="ternary multiply-accumulates per token (2B-4T: 2.08e9)",
    )
    ap.add_argument("--isa", default=None, help="TRIBIT_ISA for tribit's runs")
    ap.add_argument(
        "--head-types",
        default="",
        help="also run tribit with these load-time head types (e.g. q8_0,q6_k)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    threads = [int(v) for v in args.t.split(",") if v]
    specs = args.peer + [s for s in os.environ.get("TRIBIT_PEERS", "").split(";") if s.strip()]
    tribit_cmd = [sys.executable, "-m", "tribit", "bench", "-m", args.model]
    if args.isa:
        os.environ["TRIBIT_ISA"] = args.isa
    engines = [
        Engine("tribit", tribit_cmd, "tribit"),
        *(
            Engine(f"tribit {h} head", [*tribit_cmd, "--head-type", h], "tribit")
            for h in args.head_types.split(",")
            if h
        ),
        *(parse_peer(s) for s in specs),
    ]
    roofs = probes(threads)
    runs: dict[str, list[dict]] = {e.name: [] for e in engines}
    for rnd in range(args.rounds):
        for e in engines if rnd % 2 == 0 else engines[::-1]:
            print(f"round {rnd + 1}/{args.rounds}: {e.name}", file=sys.stderr, flush=True)
            runs[e.name].append(run_engine(e, args.p, args.n, threads, args.r))
    tests = [(f"pp{args.p}", t) for t in threads] + [(f"tg{args.n}", t) for t in threads]
    table = []
    for test, t in tests:
        row = {"test": test, "threads": t}
        for e in engines:
            vals = [r[(test, t)] for r in runs[e.name] if (test, t) in r]
            row[e.name] = statistics.median(vals) if vals else None
            row[e.name + " rounds"] = vals
        table.append(row)
    if args.json:
        print(json.dumps({"roofs": roofs, "rows": table}, indent=1))
        return 0
    print(f"cpu: {roofs['cpu']}  tribit isa: {roofs['isa']}")
    for t in threads:
        mac = roofs["mac_gmacs"][t]
        print(
            f"  {t} thread(s): read bandwidth {roofs['read_gbps'][t]:.1f} GB/s, "
            f"multiply roof {mac:.0f} GMAC/s = {mac * 1e9 / args.macs_per_token:.1f} tok/s "
            "of ternary GEMM"
            if mac
            else ""
        )
    names = [e.name for e in engines]
    print(
        f"\nmedian over {args.rounds} rounds of each engine's median of {args.r} reps "
        "(tokens/s); tribit/peer = tribit's speed / the peer's"
    )
    head = ["test", "thr", *names, *(f"tribit/{n}" for n in names[1:]), "pp roof"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for row in table:
        vals = [row[n] for n in names]
        cells = [row["test"], str(row["threads"])]
        cells += [f"{v:.2f}" if v else "-" for v in vals]
        cells += [f"{vals[0] / v:.2f}" if v and vals[0] else "-" for v in vals[1:]]
        mac = roofs["mac_gmacs"][row["threads"]]
        roof = mac * 1e9 / args.macs_per_token if mac else None
        cells.append(
            f"{vals[0] / roof:.2f}" if roof and vals[0] and row["test"].startswith("pp") else ""
        )
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
