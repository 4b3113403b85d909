"""Aggregate generation throughput of `tribit serve` with 1, 2, 4, 8 concurrent streams.

A benchmark, not a test. Either point it at a running server (`--url`) or let it start
one (`--model`, then it runs `python -m tribit serve -m MODEL --parallel P` on a free
loopback port and stops it at the end):

    python -m tribit dummy --layout large -o /tmp/large.gguf
    python benchmarks/serve_throughput.py --model /tmp/large.gguf --parallel 8

Method: every request is a `/v1/completions` call with a prompt of exactly
`--prompt-tokens` token ids (distinct per stream, so nothing is shared), greedy
(`temperature` 0) and `max_tokens` = `--max-tokens`; the end-of-generation tokens are
banned with `logit_bias` when the model file is known, so every request generates
exactly `max_tokens` tokens. For S streams, S clients send one request each at the same
time; aggregate tokens/s = generated tokens of all S / wall time from the first send to
the last answer (prefill included). Stream counts are interleaved round-robin over
`--repeats` rounds, so a noisy neighbour hits every count alike; the table shows medians
and the ratio of each median to the one-stream median, all from this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: str, parallel: int, threads: int | None, ctx: int, extra: tuple[str, ...] = ()
) -> tuple:
    """Start `tribit serve` on a free loopback port; return (process, base URL) once healthy."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tribit",
        "serve",
        "-m",
        model,
        "--port",
        str(port),
        "--parallel",
        str(parallel),
        "-c",
        str(ctx),
    ]
    if threads:
        cmd += ["-t", str(threads)]
    cmd += list(extra)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while True:
        code = None
        try:
            code = httpx.get(base + "/health", timeout=5).status_code
            if code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        # 500: the model failed to load (the server says why on its console)
        if code == 500 or proc.poll() is not None or time.time() > deadline:
            stop_server(proc)
            raise SystemExit("server did not start:\n" + proc.stdout.read().decode()[-2000:])
        time.sleep(0.5)


def stop_server(proc) -> None:
    """Terminate the server process (kill it if it does not stop in 10 s)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(proc) -> float | None:
    """User + system CPU time of the server process so far (Linux /proc), or None."""
    if proc is None:
        return None
    try:
        fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def eog_ids(model: str) -> list[int]:
    """End-of-generation token ids named in the model's metadata (to ban them)."""
    from tribit.formats import GGUFReader

    with GGUFReader(model) as r:
        md = r.metadata
    keys = ("eos", "eot", "eom")
    return sorted({int(md[k]) for k in (f"tokenizer.ggml.{x}_token_id" for x in keys) if k in md})


def run_streams(
    base: str,
    n_streams: int,
    args,
    n_vocab: int,
    bias: dict,
    headers: dict,
    round_no: int,
    proc=None,
) -> dict:
    """S concurrent requests; returns generated tokens, wall and server CPU seconds, speeds."""

    def prompt(i: int) -> list[int]:
        start = 1000 + 97 * (i + 8 * round_no)  # distinct ids per stream and round
        return [(start + 7 * j) % (n_vocab - 1) + 1 for j in range(args.prompt_tokens)]

    def one(i: int) -> dict:
        body = {"prompt": prompt(i), "max_tokens": args.max_tokens, "temperature": 0}
        if bias:
            body["logit_bias"] = bias
        if getattr(args, "stream", False):
            return streamed(body)
        r = httpx.post(base + "/v1/completions", json=body, headers=headers, timeout=3600)
        r.raise_for_status()
        return r.json()

    def streamed(body: dict) -> dict:
        """A streamed request: the last chunk's timings and the usage chunk's usage."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        out = {"events": 0}
        with httpx.stream(
            "POST", base + "/v1/completions", json=body, headers=headers, timeout=3600
        ) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    out["events"] += 1
                    out.update({k: chunk[k] for k in ("usage", "timings") if k in chunk})
        return out

    c0 = cpu_seconds(proc)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_streams) as ex:
        answers = list(ex.map(one, range(n_streams)))
    wall = time.perf_counter() - t0
    c1 = cpu_seconds(proc)
    gen = sum(a["usage"]["completion_tokens"] for a in answers)
    n_events = sum(a.get("events", 0) for a in answers)
    per = [a["timings"]["predicted_per_second"] for a in answers if a.get("timings")]
    # tokens per second of server CPU time: the machine-load-independent view
    cpu_tps = gen / (c1 - c0) if c0 is not None and c1 is not None and c1 > c0 else None
    return {
        "tokens": gen,
        "wall": wall,
        "tps": gen / wall,
        "per_stream": per,
        "cpu_tps": cpu_tps,
        "events": n_events,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8080")
    src.add_argument("--model", help="GGUF model: start a server for it")
    p.add_argument("--parallel", type=int, default=8, help="server slots (with --model)")
    p.add_argument("-t", "--threads", type=int, default=None, help="server threads")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="context per slot")
    p.add_argument("--streams", default="1,2,4,8", help="concurrent stream counts")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    p.add_argument("--api-key", default=None)
    p.add_argument("--stream", action="store_true", help="streamed requests (SSE)")
    p.add_argument(
        "--ban-eog",
        type=int,
        nargs="*",
        default=None,
        help="token ids to ban (default: the model's EOS/EOT with --model)",
    )
    args = p.parse_args(argv)
    streams = [int(x) for x in args.streams.split(",")]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    proc = None
    base = args.url
    if args.model:
        print(f"starting the server: {args.model}, --parallel {args.parallel}", flush=True)
        proc, base = start_server(args.model, args.parallel, args.threads, args.ctx_size)
    try:
        meta = httpx.get(base + "/v1/models", headers=headers, timeout=30).json()["data"][0]
        n_vocab = meta.get("meta", {}).get("n_vocab", 256)
        ban = (
            args.ban_eog
            if args.ban_eog is not None
            else (eog_ids(args.model) if args.model else [])
        )
        bias = {str(t): -100 for t in ban}
        print(
            f"model {meta['id']}, slots {meta.get('meta', {}).get('n_parallel')}, "
            f"prompt {args.prompt_tokens} tokens, max_tokens {args.max_tokens}, "
            f"banned {ban or 'nothing'}",
            flush=True,
        )
        run_streams(base, 1, args, n_vocab, bias, headers, -1, proc)  # warm-up (page cache, pools)
        results: dict[int, list[dict]] = {s: [] for s in streams}
        for r in range(args.repeats):
            for s in streams:
                res = run_streams(base, s, args, n_vocab, bias, headers, r, proc)
                results[s].append(res)
                cpu = f", {res['cpu_tps']:.2f} per CPU-s" if res["cpu_tps"] else ""
                print(
                    f"  round {r + 1} streams {s}: {res['tps']:.2f} tokens/s "
                    f"({res['tokens']} tokens in {res['wall']:.2f} s{cpu})",
                    flush=True,
                )
    finally:
        if proc is not None:
            stop_server(proc)

    med = {s: statistics.median(x["tps"] for x in results[s]) for s in streams}
    cpu = {s: [x["cpu_tps"] for x in results[s] if x["cpu_tps"]] for s in streams}
    cmed = {s: statistics.median(v) if v else float("nan") for s, v in cpu.items()}
    one, cone = med[streams[0]], cmed[streams[0]]
    print()
    print(
        f"{'streams':>7} {'aggregate tok/s':>16} {'ratio':>6} {'tok/CPU-s':>10} {'ratio':>6} "
        f"{'per-stream tok/s':>17}  runs (tok/s)"
    )
    for s in streams:
        per = [v for x in results[s] for v in x["per_stream"] if v]
        per_med = statistics.median(per) if per else float("nan")
        runs = " ".join(f"{x['tps']:.2f}" for x in results[s])
        print(
            f"{s:7d} {med[s]:16.2f} {med[s] / one:6.2f} {cmed[s]:10.2f} {cmed[s] / cone:6.2f} "
            f"{per_med:17.2f}  {runs}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
