"""Model benchmark (`tribit bench -m MODEL | --layout NAME`), llama-bench style.

Tests: `ppN` runs an N-token prompt in one batched forward from an empty cache; `tgN`
generates N tokens one forward at a time from an empty cache. Tokens are random (seeded);
one warm-up run precedes the measurements and the KV cache is reset before every rep.

The model is loaded once per thread count (the thread pool size is a load parameter). When
the copies fit comfortably in memory they are all loaded first and the reps are interleaved
(threads x tests, round after round) so that a noisy, shared machine slows all variants
alike; otherwise each thread count runs on its own, its tests still interleaved.

Decode is memory-bound: for tg we report the effective read rate, the bytes of weights one
token reads (every ternary projection as packed in memory plus the output head; the KV cache
and the one embedding row are left out, < 1% at these lengths) over the median time per
token, and its ratio to the read bandwidth probed in the same run at the same thread count.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tribit.formats.keys import OUTPUT, TOKEN_EMBD

Record = dict[str, Any]

DEFAULT_PROMPTS = (128,)
DEFAULT_GENS = (64,)
DEFAULT_REPS = 5
DEFAULT_DEPTHS = (0,)
FILL_CHUNK = 512  # tokens per forward when filling the cache to a test's depth
PROBE_REPS = 3
# load all thread-count copies at once only if they take at most this share of free memory
INTERLEAVE_MEM_SHARE = 0.4


# -- environment -----------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where dummy layouts are cached: $TRIBIT_CACHE or ~/.cache/tribit, then /dummy."""
    base = os.environ.get("TRIBIT_CACHE") or os.path.join(Path.home(), ".cache", "tribit")
    return Path(base) / "dummy"


def ensure_dummy(
    layout: str,
    qtype: str | None = None,
    head: str | None = None,
    seed: int = 0,
    directory: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Path of a cached dummy model of `layout`; written (atomically) on first use.
    `qtype` / `head` None: the layout's storage, else tq2_0 / f16."""
    from tribit.convert import DEFAULT_QTYPE, write_dummy
    from tribit.convert.layouts import get_layout

    lay = get_layout(layout)  # FormatError naming the layouts if unknown
    qtype, head = qtype or lay.qtype or DEFAULT_QTYPE, head or lay.head or "f16"
    d = Path(directory) if directory is not None else cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"dummy-{lay.name}-{qtype}-{head}-s{seed}.gguf"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            write_dummy(lay.name, tmp, qtype=qtype, seed=seed, head=head, progress=progress)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def git_commit() -> str:
    """Short commit of the source tree tribit runs from ('+' if modified), or 'unknown'."""
    src = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode != 0:
            return "unknown"
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit + ("+" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def memory_status() -> dict[str, int]:
    """Resident memory of this process in bytes: rss, peak (VmHWM), anon and file-backed."""
    keys = {"VmRSS": "rss", "VmHWM": "peak_rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
    out = {v: 0 for v in keys.values()}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in keys:
                    out[keys[name]] = int(rest.split()[0]) * 1024
    except OSError:  # not Linux: ru_maxrss only (bytes on macOS, KiB elsewhere)
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss"] = ru if sys.platform == "darwin" else ru * 1024
    return out


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """Peak resident memory of the model work, leaving out the bandwidth probe's buffer.

    The probe allocates a large buffer; the mark is read before and reset after each probe.
    """

    def __init__(self) -> None:
        self.can_reset = reset_peak_rss()
        self.peak = memory_status()["peak_rss"]

    def before_probe(self) -> None:
        self.peak = max(self.peak, memory_status()["peak_rss"])

    def after_probe(self) -> None:
        if self.can_reset:
            reset_peak_rss()

    def value(self) -> int:
        return max(self.peak, memory_status()["peak_rss"])


def mem_available() -> int:
    """MemAvailable in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- one model -------------------------------------------------------------------------------
def bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: ternary projections as packed + the head."""
    from tribit.formats import GGUFReader

    d = model.describe()
    total = int(d["weight_bytes"])  # projections + token_embd (+ output when untied)
    if not model.config.tied_head:  # the embedding is only gathered (one row), not streamed
        embd = getattr(model, "embd_bytes", 0)
        if not embd:
            with GGUFReader(model.path) as r:
                embd = int(r.tensors[TOKEN_EMBD].nbytes)
        total -= embd
    return total


def _ternary_qtype(model) -> str:
    types = model.describe()["weight_types"]
    return max(types, key=types.get) if types else ""


def _head_qtype(model) -> str:
    if getattr(model, "head_type", ""):  # the type in memory (load(head_type=) may repack)
        return model.head_type
    from tribit.formats import GGUFReader
    from tribit.formats.constants import GGMLType

    name = TOKEN_EMBD if model.config.tied_head else OUTPUT
    with GGUFReader(model.path) as r:
        t = r.tensors[name].ggml_type
    try:
        return GGMLType(t).name.lower()
    except ValueError:
        return str(t)


class _Runner:
    """A loaded model at one thread count and the timed tests on it."""

    def __init__(
        self,
        path: Path,
        n_threads: int,
        n_ctx: int,
        isa: str | None,
        seed: int,
        head_type: str | None = None,
    ):
        import numpy as np

        import tribit

        before = memory_status()
        self.model = tribit.load(
            path, n_threads=n_threads, n_ctx=n_ctx, isa=isa, head_type=head_type
        )
        self.mem_after_load = memory_status()
        self.mem_before_load = before
        self.threads = n_threads
        self.rng = np.random.default_rng(seed)
        self.n_vocab = self.model.config.n_vocab
        self.last_profile: dict[str, float] = {}  # op -> wall seconds of the last test

    def tokens(self, n: int) -> list[int]:
        return self.rng.integers(0, self.n_vocab, size=n).tolist()

    def fill(self, depth: int) -> None:
        """Empty the cache, then fill it with `depth` random tokens (not timed)."""
        self.model.reset()
        for b in range(0, depth, FILL_CHUNK):
            self.model.forward(self.tokens(min(FILL_CHUNK, depth - b)), b, 0, logits="last")

    def pp(self, n: int, depth: int = 0) -> tuple[float, float]:
        """(wall, CPU) seconds of an n-token prompt in one forward after `depth` tokens
        (last-token logits, like llama-bench)."""
        toks = self.tokens(n)
        self.fill(depth)
        self.model.profile(reset=True)
        c0, t0 = time.process_time(), time.perf_counter()
        self.model.forward(toks, depth, 0, logits="last")
        out = time.perf_counter() - t0, time.process_time() - c0
        self._keep_profile()
        return out

    def tg(self, n: int, depth: int = 0) -> tuple[float, float]:
        """(wall, CPU) seconds of n one-token forwards after `depth` tokens."""
        toks = self.tokens(n)
        self.fill(depth)
        fwd = self.model.forward
        self.model.profile(reset=True)
        c0, t0 = time.process_time(), time.perf_counter()
        for i, t in enumerate(toks):
            fwd([t], depth + i, 0, logits="last")
        out = time.perf_counter() - t0, time.process_time() - c0
        self._keep_profile()
        return out

    def _keep_profile(self) -> None:
        self.last_profile = {op: s for op, (s, _) in self.model.profile(reset=True).items()}

    def run(self, test: tuple[str, int, int]) -> tuple[float, float]:
        kind, n, depth = test
        return self.pp(n, depth) if kind == "pp" else self.tg(n, depth)

    def kv_bytes_per_token(self, n: int, depth: int) -> float:
        """Mean KV-cache bytes a token of a tg test reads: keys and values of every layer
        at the depth + (n + 1) / 2 positions it attends to on average."""
        c = self.model.config
        elem = 2 if self.model.kv_type == "f16" else 4
        return c.n_layer * 2 * c.n_head_kv * c.head_dim * elem * (depth + (n + 1) / 2)

    def warm_up(self, prompts: Sequence[int]) -> None:
        """Page the weights in and start the pool (a short prompt only if pp is timed)."""
        if prompts:
            self.pp(min(prompts))
        self.tg(2)
        self.model.reset()


def bench_model(
    path: str | os.PathLike,
    prompts: Sequence[int] = DEFAULT_PROMPTS,
    gens: Sequence[int] = DEFAULT_GENS,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    threads: Sequence[int] | None = (1,),
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    isa: str | None = None,
    probe: bool = True,
    interleave: bool | None = None,
    model_name: str | None = None,
    progress: Callable[[str], None] | None = None,
    head_type: str | None = None,
) -> list[Record]:
    """Times pp and tg tests of one model file; one record per (test, thread count).

    Every test runs at every depth (llama-bench's `-d`): the cache is first filled with
    `depth` tokens, not timed, and the test's tokens follow them; its name gets " @ dN".

    Record keys: test, n_prompt, n_gen, n_depth, threads, tokens_per_s (median), min, max,
    reps, median_s, cpu_tokens_per_s (tokens per CPU-second of the whole process), cpu_share
    (CPU seconds / wall seconds: below `threads` when the machine is shared), gbps (tg:
    weight and KV-cache bytes per token / median time per token), bw_gbps (probed read
    bandwidth), ratio (tg: gbps / bw_gbps), bytes_per_token (weights), kv_bytes_per_token
    (tg: mean KV-cache bytes read per token; None for pp), peak_rss (bytes; high-water mark
    while this thread group was loaded and run, without the probe buffer), rss, rss_anon,
    rss_file, model, path, qtype, head_qtype, isa, cpu, version, commit, load_s,
    models_loaded, op_seconds (op -> median wall seconds of the test spent in it:
    `Model.profile`).
    `interleave`: load every thread count at once and alternate them (None: if it fits).
    `head_type`: tribit.load's (repack the head at load; head_qtype says what ran).
    `threads` None: one count, every CPU this process may run on.
    """
    from tribit import __version__
    from tribit.model.model import default_threads
    from tribit.model.native import probe_bandwidth, system_info

    path = Path(path)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    depths = list(dict.fromkeys(int(d) for d in depths)) or [0]
    if min(depths) < 0:
        raise ValueError(f"depths must be >= 0, got {depths}")
    sizes = [("pp", int(n)) for n in prompts if n > 0] + [("tg", int(n)) for n in gens if n > 0]
    if not sizes:
        raise ValueError("nothing to run: give at least one -p or -n size > 0")
    tests = [(kind, n, d) for kind, n in sizes for d in depths]
    threads = list(dict.fromkeys(int(t) for t in threads or [default_threads()]))
    if not threads or min(threads) < 1:
        raise ValueError(f"thread counts must be >= 1, got {threads}")
    n_ctx = max(n + d for _, n, d in tests) + 8
    info = system_info()
    cpu_name = info["cpu"] or platform.processor()
    commit = git_commit()
    say = progress or (lambda s: None)

    groups: list[list[int]]
    if interleave is None:
        est = path.stat().st_size * 1.1 * len(threads)
        avail = mem_available()
        interleave = len(threads) > 1 and avail > 0 and est < INTERLEAVE_MEM_SHARE * avail
    groups = [threads] if interleave else [[t] for t in threads]

    records: list[Record] = []
    for group in groups:
        peak = PeakTracker()  # per group: the previous group's models are gone

        def probe_bw(t: int, peak: PeakTracker = peak) -> float:
            peak.before_probe()
            try:
                return probe_bandwidth(t, reps=PROBE_REPS)[0]
            finally:
                peak.after_probe()

        runners: dict[int, _Runner] = {}
        for t in group:
            say(f"loading {path.name} with {t} thread(s)")
            runners[t] = _Runner(path, t, n_ctx, isa, seed, head_type)
        mem_loaded = memory_status()
        times: dict[tuple[int, tuple[str, int, int]], list[float]] = {}
        cpu: dict[tuple[int, tuple[str, int, int]], list[float]] = {}
        ops: dict[tuple[int, tuple[str, int, int]], list[dict[str, float]]] = {}
        probes: dict[int, list[float]] = {t: [] for t in group}
        for t, r in runners.items():
            r.warm_up([n for k, n, _ in tests if k == "pp"])
            if probe:
                probes[t].append(probe_bw(t))
        for rep in range(reps):
            say(f"rep {rep + 1}/{reps} (threads {','.join(map(str, group))})")
            for t, r in runners.items():  # interleaved: every variant sees the same noise
                for test in tests:
                    wall, cpu_s = r.run(test)
                    times.setdefault((t, test), []).append(wall)
                    cpu.setdefault((t, test), []).append(cpu_s)
                    ops.setdefault((t, test), []).append(r.last_profile)
            if probe and rep % 2 == 1:
                for t in group:
                    probes[t].append(probe_bw(t))
        peak_rss = peak.value()
        for t, r in runners.items():
            bpt = bytes_per_token(r.model)
            bw = statistics.median(probes[t]) if probes[t] else 0.0
            base = {
                "model": model_name or r.model.config.name or path.stem,
                "path": str(path),
                "qtype": _ternary_qtype(r.model),
                "head_qtype": _head_qtype(r.model),
                "isa": r.model.isa,
                "cpu": cpu_name,
                "version": __version__,
                "commit": commit,
                "load_s": round(r.model.load_time_s, 3),
                "bytes_per_token": bpt,
                "bw_gbps": bw,
                "peak_rss": peak_rss,
                "rss": mem_loaded["rss"],
                "rss_anon": mem_loaded["rss_anon"],
                "rss_file": mem_loaded["rss_file"],
                "models_loaded": len(group),
            }
            for test in tests:
                kind, n, depth = test
                ts = times[(t, test)]
                med = statistics.median(ts)
                rec: Record = {
                    "test": _test_name(test),
                    "n_prompt": n if kind == "pp" else 0,
                    "n_gen": n if kind == "tg" else 0,
                    "n_depth": depth,
                    "threads": t,
                    "tokens_per_s": n / med,
                    "min": n / max(ts),
                    "max": n / min(ts),
                    "reps": len(ts),
                    "median_s": med,
                    "gbps": None,
                    "ratio": None,
                    "kv_bytes_per_token": None,
                    # CPU seconds of all the process's threads: on a shared machine,
                    # tokens per CPU-second at 1 thread estimates the speed of an idle core
                    "cpu_tokens_per_s": n / max(statistics.median(cpu[(t, test)]), 1e-9),
                    "cpu_share": statistics.median(cpu[(t, test)]) / med,
                    # wall seconds per op (median over reps) of the native forward;
                    # the rest of median_s is Python and the binding
                    "op_seconds": {
                        op: statistics.median(p[op] for p in ops[(t, test)])
                        for op in ops[(t, test)][0]
                    },
                }
                if kind == "tg":
                    rec["kv_bytes_per_token"] = r.kv_bytes_per_token(n, depth)
                    rec["gbps"] = (bpt + rec["kv_bytes_per_token"]) * n / med / 1e9
                    rec["ratio"] = rec["gbps"] / bw if bw else None
                rec.update(base)
                records.append(rec)
        del runners
    order = {t: i for i, t in enumerate(threads)}
    test_order = {_test_name(test): i for i, test in enumerate(tests)}
    records.sort(key=lambda r: (test_order[r["test"]], order[r["threads"]]))
    return records


def _test_name(test: tuple[str, int, int]) -> str:
    kind, n, depth = test
    return f"{kind}{n}" + (f" @ d{depth}" if depth else "")


# -- output ----------------------------------------------------------------------------------
def _gib(b: int) -> str:
    return f"{b / 2**30:.2f}"


def format_table(records: Sequence[Record], markdown: bool = False) -> str:
    """The records as a llama-bench-like table (markdown or fixed width)."""
    cols = [
        "model",
        "qtype",
        "isa",
        "threads",
        "test",
        "t/s (median)",
        "min-max",
        "GB/s",
        "ratio",
        "t/CPU-s",
        "CPU/wall",
        "peak RSS GiB",
    ]
    rows = []
    for r in records:
        rows.append(
            [
                str(r["model"]),
                str(r["qtype"]),
                str(r["isa"]),
                str(r["threads"]),
                r["test"],
                f"{r['tokens_per_s']:.2f}",
                f"{r['min']:.2f}-{r['max']:.2f}",
                f"{r['gbps']:.2f}" if r["gbps"] is not None else "",
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "",
                f"{r['cpu_tokens_per_s']:.2f}",
                f"{r['cpu_share']:.2f}",
                _gib(r["peak_rss"]),
            ]
        )
    if markdown:
        lines = [
            "| " + " | ".join(cols) + " |",
            "|" + "|".join("---:" if i >= 3 else "---" for i in range(len(cols))) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*cols), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def format_profile(records: Sequence[Record]) -> str:
    """Where each test's time goes: the share of its median time per op, largest first;
    'python' is the part outside the native forward (binding, loop, sampling)."""
    lines = []
    for r in records:
        total = r["median_s"]
        shares = sorted(r["op_seconds"].items(), key=lambda kv: -kv[1])
        parts = [f"{op} {sec / total:.1%}" for op, sec in shares if sec / total >= 0.001]
        rest = total - sum(r["op_seconds"].values())
        parts.append(f"python {max(rest, 0.0) / total:.1%}")
        lines.append(f"{r['test']} t{r['threads']} ({total * 1e3:.1f} ms): " + ", ".join(parts))
    return "\n".join(lines)
