"""Benchmarks (not tests), as libraries: `tribit bench` (tribit.cli.bench) parses the
options and prints.

`tribit.bench.kernels` times the native kernels on the BitNet b1.58 2B-4T shapes against
the probed read bandwidth and multiply-accumulate peak; `tribit.bench.model` times prompt
processing and generation of a model file, llama-bench style; `tribit.bench.perplexity`
scores a text as llama-perplexity does. The native core is reached through
`tribit.model` (`tribit.model.native`), never imported here (tests/test_layers.py).
"""

from __future__ import annotations
