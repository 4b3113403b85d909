"""float32 sums and means in the exact order PyTorch's CPU kernel adds them.

BitNet's converters compute the absmean scale with ``w.abs().mean()`` in float32
(docs/FORMATS.md 1.1). A correctly rounded mean differs from torch's by one ulp on
roughly a third of all tensors, so a converter that wants the *same* scale
(and hence the same ternary codes) as bitnet.cpp's or mainline's Python
converters must add the numbers in torch's order. That order, read from
``aten/src/ATen/native/cpu/SumKernel.cpp`` (``cascade_sum``):

- The flat input is viewed as vectors of ``lanes`` floats, the width of the
  ``Vectorized<float>`` of the kernel that runs; the lanes are summed
  independently (``vectorized_inner_sum``). On x86-64 that is 8 whatever
  ``torch.backends.cpu.get_cpu_capability()`` says: ``sum_stub`` is registered
  with ``REGISTER_DISPATCH``, which leaves the AVX-512 slot empty, so an
  AVX-512 CPU runs the AVX2 kernel (and the DEFAULT kernel's generic vector is
  32 bytes too). See ``torch_sum_lanes``.
- Each lane's values are dealt round-robin to 4 accumulators (``row_sum``,
  "ilp"), and each accumulator is a 4-level cascade (``multi_row_sum``): runs
  of ``step = 2**max(4, ceil(log2(n)) // 4)`` values are summed left to right,
  every ``step`` run sums are added into level 2, and so on.
- Leftover vectors go into accumulator 0; the 4 accumulators are added in
  order; then the scalar tail (n % lanes values) and the lanes are added,
  in order, to a fresh 0.
- With ``n >= 32768`` and more than one torch thread the input is split into
  ``min(n_threads, ceil(n / 32768))`` equal chunks summed as above, and the
  per-thread results are summed again the same way (``two_pass_reduction``).
- ``mean`` is ``sum / float32(n)`` (CPU ``mean_out`` is sum then divide).

Tested bit for bit against torch 2.13 with 1 and 2 threads on an AVX-512 Zen 4
host under each of ``ATEN_CPU_CAPABILITY=avx512``, ``avx2`` and ``default``: the
8-lane order matched on 285 of 285 sizes (1 to 4194305 values), the 16-lane
order on 79 (the sizes where the two orders happen to agree). Other machines
(aarch64: NEON, SVE) are not measured; their vector width differs by torch
version, so ``torch_sum_lanes`` gives no answer there.
"""

from __future__ import annotations

import platform

import numpy as np

GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: below it torch reduces serially
_ILP = 4
_LEVELS = 4


def _seq(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Left-to-right float32 sum along ``axis`` starting from 0 (never pairwise)."""
    if a.shape[axis] == 0:
        return np.zeros(np.delete(a.shape, axis), np.float32)
    # accumulate is sequential by definition, unlike np.sum's pairwise summation
    return np.add.accumulate(a, axis=axis, dtype=np.float32).take(-1, axis=axis)


def _ceil_log2(x: int) -> int:
    return 0 if x <= 1 else int(x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """torch ``multi_row_sum``: rows (size, ...) -> (...), a 4-level cascade over axis 0."""
    size, tail_shape = rows.shape[0], rows.shape[1:]
    step = 1 << max(4, _ceil_log2(size) // _LEVELS)
    levels = [rows]  # levels[j]: the complete sums that level j adds, in order
    leftovers = []  # what is still sitting in accumulator j at the end
    for _ in range(_LEVELS - 1):
        lower = levels[-1]
        full = lower.shape[0] // step
        leftovers.append(_seq(lower[full * step :]))
        levels.append(_seq(lower[: full * step].reshape(full, step, *tail_shape), axis=1))
    top = _seq(levels[-1])  # the last level is never flushed
    acc = leftovers[0]
    for part in (*leftovers[1:], top):
        acc = (acc + part).astype(np.float32)
    return acc


def _row_sum(x: np.ndarray) -> np.ndarray:
    """torch ``row_sum``: x (n, ...) -> (...), 4 interleaved cascades then combined."""
    n = x.shape[0]
    n_ilp = n // _ILP
    parts = _multi_row_sum(x[: n_ilp * _ILP].reshape(n_ilp, _ILP, *x.shape[1:]))
    acc = parts[0]
    for i in range(n_ilp * _ILP, n):
        acc = (acc + x[i]).astype(np.float32)
    for k in range(1, _ILP):
        acc = (acc + parts[k]).astype(np.float32)
    return acc


def _serial_sum(x: np.ndarray, lanes: int) -> np.float32:
    """One thread's sum of the flat float32 array ``x``."""
    n_vec = x.size // lanes
    if n_vec == 0:  # too short for one vector: the scalar loop, same cascade
        return np.float32(_row_sum(x))
    lane_sums = _row_sum(x[: n_vec * lanes].reshape(n_vec, lanes))
    acc = np.float32(0)
    for v in (*x[n_vec * lanes :], *lane_sums):
        acc = np.float32(acc + v)
    return acc


def torch_sum_lanes(machine: str | None = None) -> int | None:
    """The ``lanes`` of torch's float32 sum on ``machine`` (default: this one), or None.

    8 on x86-64 for every torch CPU capability (DEFAULT, AVX2 and AVX512: the
    AVX-512 slot of ``sum_stub`` is empty, so the AVX2 kernel runs; measured,
    see the module docstring). None elsewhere: aarch64 builds use NEON vectors
    of 4 floats in recent torch (``vec128_float_neon.h``) and 8 in older ones,
    and none of them has been measured here.
    """
    machine = (machine or platform.machine()).lower()
    return 8 if machine in ("x86_64", "amd64", "x64") else None


def torch_sum_f32(x: np.ndarray, lanes: int = 8, n_threads: int = 1) -> np.float32:
    """``torch.from_numpy(x).sum()`` for a float32 array, bit for bit.

    ``lanes``: floats per vector of the torch kernel that runs (8 on x86-64
    whatever the CPU capability, see ``torch_sum_lanes``); ``n_threads``:
    ``torch.get_num_threads()`` of the run being matched (it only matters for
    ``x.size >= 32768``). ``x`` is summed as a flat C-order array.
    """
    if lanes < 1 or n_threads < 1:
        raise ValueError(f"lanes and n_threads must be >= 1, got {lanes}, {n_threads}")
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    n = flat.size
    if n < GRAIN_SIZE or n_threads == 1:
        return _serial_sum(flat, lanes)
    used = min(n_threads, -(-n // GRAIN_SIZE))
    chunk = -(-n // used)
    partial = np.zeros(n_threads, np.float32)  # one slot per torch thread, unused ones stay 0
    for i in range(used):
        if i * chunk < n:
            partial[i] = _serial_sum(flat[i * chunk : (i + 1) * chunk], lanes)
    return _serial_sum(partial, lanes)


def torch_mean_f32(x: np.ndarray, lanes: int = 8, n_threads: int = 1) -> np.float32:
    """``torch.from_numpy(x).mean()`` for a float32 array: the sum above / float32(n)."""
    n = np.asarray(x).size
    if n == 0:
        raise ValueError("mean of an empty array")
    return np.float32(torch_sum_f32(x, lanes, n_threads) / np.float32(n))
