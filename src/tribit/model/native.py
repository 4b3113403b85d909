"""What the layers above `model/` need of the native core besides a loaded model: the CPU
and its kernel variants (`tribit info`), the read-bandwidth and multiply-accumulate probes,
and single-kernel entry points on synthetic operands (`tribit.bench.kernels`).

`model/` is the only package that imports `tribit._core` (DESIGN.md, tests/test_layers.py);
benchmarks and the CLI come through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tribit import _core

PROBE_BYTES = 256 << 20  # far larger than the last-level cache

# A kernel call bound to its operands: (isa, n_threads) -> result.
KernelCall = Callable[[str, int], object]


def system_info() -> dict[str, Any]:
    """CPU name and features, compiled/runnable/selected ISAs, kernel name per op."""
    cpu = _core.cpu_info()
    return {
        "cpu": cpu["name"],
        "features": list(cpu["features"]),
        "compiled_isas": list(_core.compiled_isas()),
        "runnable_isas": list(_core.runnable_isas()),
        "selected_isa": _core.selected_isa(),
        "kernels": dict(_core.kernel_names()),
    }


def kernel_names(isa: str | None = None) -> dict[str, str]:
    """op -> name of the kernel that runs it for `isa` (None: the selected variant)."""
    return dict(_core.kernel_names(isa))


def probe_bandwidth(
    n_threads: int, reps: int = 8, nbytes: int = PROBE_BYTES
) -> tuple[float, float]:
    """Read bandwidth of n_threads summing a buffer far larger than the LLC, in GB/s.

    Returns (wall, cpu): the median wall-clock rate, and the rate per CPU second per thread,
    which other processes on the machine disturb much less. Each native probe call fills
    its buffer once and reads it reps + 1 times, so the CPU time of `reps` reads is the
    difference between a call with 1 + reps repetitions and one with 1.
    """
    c0 = time.process_time()
    _core.probe_read_bandwidth(nbytes=nbytes, n_threads=n_threads, reps=1)
    c1 = time.process_time()
    wall = _core.probe_read_bandwidth(nbytes=nbytes, n_threads=n_threads, reps=1 + reps)
    c2 = time.process_time()
    per_thread = ((c2 - c1) - (c1 - c0)) / n_threads
    cpu = nbytes * reps / per_thread / 1e9 if per_thread > 0 else float("nan")
    return float(wall), cpu


def probe_compute(isa: str, n_threads: int, reps: int = 5) -> float | None:
    """GMAC/s (all threads, wall clock) of the register-only loop of the instructions the
    ISA's ternary GEMM needs per 32 weights and token (AVX2: vpmaddubsw + vpaddw; AVX-512
    VNNI: vpdpbusd); None for ISAs without a probe (generic, NEON)."""
    return _core.probe_mac_peak(n_threads=n_threads, isa=isa, iters=1 << 21, reps=reps)


def ternary_matmul_call(t: np.ndarray, gamma: float, x: np.ndarray, kind: str) -> KernelCall:
    """The ternary matmul of weights t (m, k) in {-1, 0, 1}, packed once, on the activations
    x (n, k) quantized once; `kind`: 'gemv' (decode kernel) or 'gemm' (prefill kernel)."""
    w = _core.pack_ternary(t, np.float32(gamma))
    q, scale, sum_q = _core.quantize_act(x)

    def call(isa: str, threads: int) -> object:
        return _core.ternary_matmul(w, q, scale, sum_q, isa=isa, kind=kind, n_threads=threads)

    return call


def q6_k_q8_k_call(data: np.ndarray, m: int, k: int, x: np.ndarray) -> KernelCall:
    """The q6_k head's integer path on Q6_K `data` (m, k) and x (n, k) float32: x quantized
    to q8_K once, here; the call times the integer kernel alone."""
    fm = _core.FloatMatrix(data, "q6_k", m, k)
    q = _core.quantize_q8_k(np.ascontiguousarray(x, np.float32))

    def call(isa: str, threads: int) -> object:
        return _core.matmul_q6_k_q8_k(fm, q, isa=isa, n_threads=threads)

    return call


def float_matmul_call(data: np.ndarray, qtype: str, m: int, k: int, x: np.ndarray) -> KernelCall:
    """The head's matmul of a float/quantized matrix (m, k) stored as `data` in `qtype`
    (f32, f16, bf16, q8_0, q6_k) on x (n, k) float32."""
    fm = _core.FloatMatrix(data, qtype, m, k)

    def call(isa: str, threads: int) -> object:
        return _core.float_matmul(fm, x, isa=isa, n_threads=threads)

    return call
