"""Kernel benchmark: ternary GEMV/GEMM and the head GEMV (f16, q8_0, q6_k float and integer
paths) on 2B-4T shapes.

Each op is timed per ISA and thread count, the variants interleaved back to back so that
a noisy (shared) machine hits them alike; the median of the repetitions is reported next
to the read bandwidth probed in the same run, so `ratio` says how close a memory-bound
kernel comes to what the machine can stream, and to the multiply-accumulate peak probed in
the same run (`mac_ratio`), so it says how close a compute-bound one (the prefill GEMM)
comes to what the core can issue.

GEMV matrices are stacked (`copies` independent matrices of the real shape, stored as one
taller matrix) until they exceed the last-level cache many times over: a decode step reads
every weight from DRAM once, and one call per copy would mostly time the Python call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tribit.model import native
from tribit.model.native import PROBE_BYTES, probe_bandwidth, probe_compute, system_info

# BitNet b1.58 2B-4T linear layers (out_features m, in_features k) and its f16 head.
SHAPES_2B4T: list[tuple[int, int]] = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]
HEAD_2B4T: tuple[int, int] = (128256, 2560)
GEMM_TOKENS = 128
STACK_BYTES = 64 << 20  # GEMV working set: 8x the 8 MiB L3 of the development machine

Record = dict[str, Any]


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _random_ternary(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    # ~1/3 zeros like absmean-ternarized weights; the content does not change the timing
    return (rng.integers(0, 3, (m, k), dtype=np.int8) - 1).astype(np.int8)


class _Case:
    """One op on one shape: a callable per (isa, threads) and the bytes/MACs it does."""

    def __init__(
        self,
        op: str,
        qtype: str,
        m: int,
        k: int,
        n: int,
        copies: int,
        weight_bytes: int,
        call: native.KernelCall,
    ) -> None:
        self.op, self.qtype, self.m, self.k, self.n = op, qtype, m, k, n
        self.copies, self.weight_bytes, self.call = copies, weight_bytes, call


def _ternary_case(
    rng: np.random.Generator, kind: str, m: int, k: int, n: int, stack_bytes: int
) -> _Case:
    packed_bytes = m * (math.ceil(k / 128) * 128) // 4
    copies = max(1, math.ceil(stack_bytes / packed_bytes)) if kind == "gemv" else 1
    t = _random_ternary(rng, m * copies, k)
    call = native.ternary_matmul_call(t, 0.5, rng.standard_normal((n, k)).astype(np.float32), kind)
    return _Case(f"ternary_{kind}", "i2", m, k, n, copies, packed_bytes, call)


def _head_case(rng: np.random.Generator, m: int, k: int) -> _Case:
    # random f16 bit patterns in [0, 1): finite, and cheap to make at this size
    h = rng.integers(0, 0x3BFF, (m, k), dtype=np.uint16).view(np.float16)
    call = native.float_matmul_call(h, "f16", m, k, rng.standard_normal((1, k)).astype(np.float32))
    return _Case("matmul_f16", "f16", m, k, 1, 1, m * k * 2, call)


# bytes per block and where its f16 d sits, of the quantized head types
_QUANT_HEADS = {"q8_0": (32, 34, 0), "q6_k": (256, 210, 208)}


def _quant_head_case(
    rng: np.random.Generator, qtype: str, m: int, k: int, integer: bool = False
) -> _Case:
    # random blocks (codes and scales: any bytes) with a small finite f16 d: the timing
    # does not depend on the values, and quantizing a real 2B-4T head takes a while
    qk, nbytes, d_at = _QUANT_HEADS[qtype]
    raw = rng.integers(0, 256, (m * (k // qk), nbytes), dtype=np.uint8)
    raw[:, d_at : d_at + 2] = np.frombuffer(np.float16(1e-3).tobytes(), np.uint8)
    x = rng.standard_normal((1, k)).astype(np.float32)
    if integer:  # the q6_k head as the model runs it: q8_K activations, integer sums
        call = native.q6_k_q8_k_call(raw.reshape(m, -1), m, k, x)
        return _Case("matmul_q6_k_q8_k", qtype, m, k, 1, 1, raw.nbytes, call)
    call = native.float_matmul_call(raw.reshape(m, -1), qtype, m, k, x)
    return _Case(f"matmul_{qtype}", qtype, m, k, 1, 1, raw.nbytes, call)


def _cases(
    ops: Iterable[str],
    rng: np.random.Generator,
    shapes: Sequence[tuple[int, int]],
    head: tuple[int, int],
    gemm_n: int,
    stack_bytes: int,
) -> Iterable[_Case]:
    for op in ops:
        if op == "gemv":
            for m, k in shapes:
                yield _ternary_case(rng, "gemv", m, k, 1, stack_bytes)
        elif op == "gemm":
            for m, k in shapes:
                yield _ternary_case(rng, "gemm", m, k, gemm_n, stack_bytes)
        elif op == "head":  # the f16 head and the smaller ones load(head_type=) makes
            yield _head_case(rng, *head)
            for qtype, (qk, _, _) in _QUANT_HEADS.items():
                if head[1] % qk == 0:
                    yield _quant_head_case(rng, qtype, *head)
            if head[1] % 256 == 0:
                yield _quant_head_case(rng, "q6_k", *head, integer=True)
        else:
            raise ValueError(f"unknown op {op!r} (gemv, gemm, head)")


def _probe_record(
    op: str, qtype: str, isa: str, threads: int, bw: float, bw_cpu: float, **values: float
) -> Record:
    """A record of a probe (read bandwidth, multiply-accumulate peak) with the keys of
    the kernel records; `values` sets the probed figures, the rest are zero/None."""
    r: Record = {
        "op": op,
        "qtype": qtype,
        "isa": isa,
        "kernel": f"probe_{op}",
        "m": 0,
        "k": 0,
        "n": 0,
        "threads": threads,
        "copies": 1,
        "median_s": 0.0,
        "min_s": 0.0,
        "cpu_s": 0.0,
        "gbps": 0.0,
        "gmacs": 0.0,
        "bw_gbps": bw,
        "ratio": 0.0,
        "cpu_gbps": 0.0,
        "bw_cpu_gbps": bw_cpu,
        "cpu_ratio": 0.0,
        "mac_peak_gmacs": None,
        "mac_ratio": None,
    }
    r.update(values)
    return r


def bench_kernels(
    threads: Sequence[int] = (1, 2),
    reps: int = 7,
    isas: Sequence[str] | None = None,
    ops: Sequence[str] = ("gemv", "gemm", "head"),
    shapes: Sequence[tuple[int, int]] = SHAPES_2B4T,
    head: tuple[int, int] = HEAD_2B4T,
    gemm_n: int = GEMM_TOKENS,
    stack_bytes: int = STACK_BYTES,
    probe_bytes: int = PROBE_BYTES,
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Times the kernels; returns one record per (op, shape, isa, threads).

    Record keys: op, qtype, isa, kernel, m, k, n, threads, copies, median_s, min_s, cpu_s,
    gbps (weight bytes of one matrix / median_s), gmacs, bw_gbps (probed in this run), ratio
    (gbps / bw_gbps), the same on CPU time: cpu_gbps, bw_cpu_gbps, cpu_ratio, and for the
    ternary ops mac_peak_gmacs (the ISA's multiply-accumulate peak probed in this run, None
    without a probe) and mac_ratio (gmacs / mac_peak_gmacs). One `read_bandwidth` record per
    thread count and one `mac_peak` record per (ISA, thread count) close the list. Times are
    per matrix of shape (m, k) with n tokens. median_s is wall clock; cpu_s is the median
    process CPU time per thread: close to median_s on an idle machine, smaller when other
    processes take the cores (then cpu_ratio is the better estimate of an idle machine's).
    """
    info = system_info()
    isas = list(isas or [info["selected_isa"]])
    runnable = set(info["runnable_isas"])
    for isa in isas:
        if isa not in runnable:
            raise ValueError(f"ISA {isa!r} cannot run here (runnable: {sorted(runnable)})")
    names = {isa: native.kernel_names(isa) for isa in isas}
    rng = np.random.default_rng(0)
    probes: dict[int, list[tuple[float, float]]] = {t: [] for t in threads}
    peaks: dict[tuple[str, int], list[float]] = {(i, t): [] for i in isas for t in threads}
    results: list[tuple[_Case, str, int, list[float]]] = []
    for case in _cases(ops, rng, shapes, head, gemm_n, stack_bytes):
        for t in threads:
            probes[t].append(probe_bandwidth(t, nbytes=probe_bytes))
        if case.op == "ternary_gemm":
            for key in peaks:
                peak = probe_compute(*key)
                if peak is not None:
                    peaks[key].append(peak)
        if progress:
            progress(f"{case.op} {case.m}x{case.k} n={case.n} (x{case.copies})")
        times: dict[tuple[str, int], list[tuple[float, float]]] = {
            (i, t): [] for i in isas for t in threads
        }
        for key in times:
            case.call(*key)  # warm up: page in, spin up the pool
        for _ in range(reps):
            for key in times:  # interleaved: every variant sees the same noise
                times[key].append(_timed(lambda c=case, key=key: c.call(*key)))
        results.extend((case, i, t, ts) for (i, t), ts in times.items())
    for t in threads:
        probes[t].append(probe_bandwidth(t, nbytes=probe_bytes))
    bw = {t: statistics.median(w for w, _ in v) for t, v in probes.items()}
    bw_cpu = {t: statistics.median(c for _, c in v) for t, v in probes.items()}
    for key, v in peaks.items():
        if not v and (p := probe_compute(*key)) is not None:
            v.append(p)
    peak = {key: statistics.median(v) if v else None for key, v in peaks.items()}
    records = []
    for case, isa, t, ts in results:
        wall = [w / case.copies for w, _ in ts]
        med = statistics.median(wall)
        cpu = statistics.median(c / case.copies / t for _, c in ts)
        gbps = case.weight_bytes / med / 1e9
        gmacs = case.m * case.k * case.n / med / 1e9
        mac_peak = peak[(isa, t)] if case.op.startswith("ternary_") else None
        records.append(
            {
                "op": case.op,
                "qtype": case.qtype,
                "isa": isa,
                "kernel": names[isa].get(case.op, ""),
                "m": case.m,
                "k": case.k,
                "n": case.n,
                "threads": t,
                "copies": case.copies,
                "median_s": med,
                "min_s": min(wall),
                "cpu_s": cpu,
                "gbps": gbps,
                "gmacs": gmacs,
                "bw_gbps": bw[t],
                "ratio": gbps / bw[t],
                "cpu_gbps": case.weight_bytes / cpu / 1e9,
                "bw_cpu_gbps": bw_cpu[t],
                "cpu_ratio": case.weight_bytes / cpu / 1e9 / bw_cpu[t],
                "mac_peak_gmacs": mac_peak,
                "mac_ratio": gmacs / mac_peak if mac_peak else None,
            }
        )
    for t in threads:
        records.append(
            _probe_record(
                "read_bandwidth",
                "",
                "",
                t,
                bw[t],
                bw_cpu[t],
                gbps=bw[t],
                cpu_gbps=bw_cpu[t],
                ratio=1.0,
                cpu_ratio=1.0,
            )
        )
    for (isa, t), p in peak.items():
        if p is not None:
            records.append(
                _probe_record(
                    "mac_peak",
                    "i8",
                    isa,
                    t,
                    bw[t],
                    bw_cpu[t],
                    gmacs=p,
                    mac_peak_gmacs=p,
                    mac_ratio=1.0,
                )
            )
    return records


def format_table(records: Sequence[Record]) -> str:
    """A fixed-width text table of bench_kernels records (wall clock, then CPU time)."""
    head = (
        f"{'op':<18}{'qtype':<6}{'isa':<8}{'m':>7}{'k':>6}{'n':>5}{'thr':>4}"
        f"{'ms':>10}{'GB/s':>7}{'ratio':>6}{'GMAC/s':>7}{'roof':>6}"
        f" |{'cpu ms':>9}{'GB/s':>7}{'ratio':>6}{'GMAC/s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        shape = f"{r['op']:<18}{r['qtype']:<6}{r['isa']:<8}{r['m']:>7}{r['k']:>6}{r['n']:>5}"
        if r["op"] == "read_bandwidth":
            shape = f"{'read_bw probe':<32}{'':>18}"
            lines.append(
                f"{shape}{r['threads']:>4}{'':>10}{r['gbps']:>7.2f}{'':>19}"
                f" |{'':>9}{r['cpu_gbps']:>7.2f}"
            )
            continue
        if r["op"] == "mac_peak":
            shape = f"{'mac_peak probe':<24}{r['isa']:<8}{'':>18}"
            lines.append(f"{shape}{r['threads']:>4}{'':>23}{r['gmacs']:>7.1f}{1.0:>6.2f} |")
            continue
        roof = f"{r['mac_ratio']:>6.2f}" if r.get("mac_ratio") is not None else f"{'':>6}"
        cpu_macs = r["m"] * r["k"] * r["n"] / r["cpu_s"] / 1e9 if r["cpu_s"] > 0 else 0.0
        lines.append(
            f"{shape}{r['threads']:>4}{r['median_s'] * 1e3:>10.3f}{r['gbps']:>7.2f}"
            f"{r['ratio']:>6.2f}{r['gmacs']:>7.1f}{roof}"
            f" |{r['cpu_s'] * 1e3:>9.3f}{r['cpu_gbps']:>7.2f}{r['cpu_ratio']:>6.2f}{cpu_macs:>7.1f}"
        )
    return "\n".join(lines)
