"""Benchmarks (not tests): kernel throughput against probed memory bandwidth.

`tribit.bench.kernels` times the native kernels on the BitNet b1.58 2B-4T shapes;
a model benchmark (`tribit.bench.model`) plugs into `tribit bench` the same way.
Benchmarks may import `tribit._core` directly (tests/test_layers.py).
"""

from __future__ import annotations
