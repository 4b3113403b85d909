"""Ray Serve's overhead: aggregate tokens/s of S concurrent streams through Serve (one
replica) vs `tribit serve` alone, same machine, same run. A benchmark, not a test.

    python -m tribit dummy --layout large -o /tmp/large.gguf
    python benchmarks/ray_serve_overhead.py --model /tmp/large.gguf -t 2 --parallel 8

Both servers run the same model with the same threads and slots: `tribit serve` in a child
process, the Serve app (tribit.integrations.ray_serve, 1 replica, proxy on 127.0.0.1) on a
local Ray cluster of `-t` CPUs. Rounds alternate between the two (direct, Serve, direct,
...) so machine noise hits both alike; the requests are serve_throughput.py's (prompts of
`--prompt-tokens` ids, greedy, `--max-tokens` each, end-of-generation banned), streamed
(SSE) unless `--no-stream`. Ray's idle processes (GCS, raylet, controller, proxy) run during
the direct rounds too. Prints each round, the medians and the ratio Serve / direct.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import serve_throughput as st  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("-c", "--ctx-size", type=int, default=256)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-stream", dest="stream", action="store_false")
    p.add_argument(
        "--intervals",
        default="0",
        help="comma-separated --stream-interval values (ms) to compare, each for "
        "both servers (e.g. 0,30)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from tribit.integrations.ray_serve import build_app

    cpu = subprocess.run(
        [sys.executable, "-m", "tribit", "info"], capture_output=True, text=True
    ).stdout
    print(next((x.strip() for x in cpu.splitlines() if x.strip().startswith("cpu:")), "cpu: ?"))
    print(
        f"model {args.model}, -t {args.threads}, --parallel {args.parallel}, "
        f"{args.streams} streams x {args.max_tokens} tokens, "
        f"{'streamed' if args.stream else 'whole answers'}",
        flush=True,
    )
    intervals = [float(x) for x in args.intervals.split(",")]
    procs, targets = [], {}
    try:
        ray.init(
            address="local",
            num_cpus=args.threads * len(intervals),
            include_dashboard=False,
            log_to_driver=False,
        )
        port = st.free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for ms in intervals:
            proc, direct = st.start_server(
                args.model,
                args.parallel,
                args.threads,
                args.ctx_size,
                ("--stream-interval", str(ms)),
            )
            procs.append(proc)
            prefix = f"/i{int(ms)}"
            serve.run(
                build_app(
                    model=args.model,
                    slots=args.parallel,
                    threads=args.threads,
                    ctx=args.ctx_size,
                    stream_interval_ms=ms,
                    name=f"tribit{int(ms)}",
                ),
                name=f"tribit{int(ms)}",
                route_prefix=prefix,
            )
            targets[f"direct {ms:g} ms"] = (direct, proc)
            targets[f"serve {ms:g} ms"] = (f"http://127.0.0.1:{port}{prefix}", None)
        meta = httpx.get(direct + "/v1/models", timeout=30).json()["data"][0]
        n_vocab = meta["meta"]["n_vocab"]
        bias = {str(t): -100 for t in st.eog_ids(args.model)}
        for base, pr in targets.values():  # warm-up
            st.run_streams(base, args.streams, args, n_vocab, bias, {}, -1, pr)
        tps: dict[str, list[float]] = {k: [] for k in targets}
        events: dict[str, list[float]] = {k: [] for k in targets}
        for r in range(args.repeats):
            for name, (base, pr) in targets.items():
                res = st.run_streams(base, args.streams, args, n_vocab, bias, {}, r, pr)
                tps[name].append(res["tps"])
                events[name].append(res.get("events", 0) / args.streams)
                print(
                    f"  round {r + 1} {name:14}: {res['tps']:.2f} tokens/s "
                    f"({res['tokens']} tokens in {res['wall']:.2f} s, "
                    f"{res.get('events', 0) / args.streams:.0f} events a stream)",
                    flush=True,
                )
    finally:
        for proc in procs:
            st.stop_server(proc)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    med = {k: statistics.median(v) for k, v in tps.items()}
    print(f"\n{'server':16} {'median tok/s':>12} {'vs direct 0 ms':>15} {'events/stream':>14}")
    base = med[f"direct {intervals[0]:g} ms"]
    for k, v in med.items():
        print(f"{k:16} {v:12.2f} {v / base:15.3f} {statistics.median(events[k]):14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
