"""Mainline llama.cpp (llama-cpp-python 0.3.36) as the reference of a Q2_0 / Q1_0 model
file: a prompt's logits (one batch) and greedy decoding (one token at a time), f32 KV caches
on both sides, against tribit's group_mode "llama" on every ISA (docs/FORMATS.md 3.11).

Bit-identical where this llama.cpp is an AVX-512 build, whose float ops tribit follows
(tests/ggml_lib.py); another build rounds attention, softmax and SiLU in its own order,
which moves a Q8_0 activation code by one step (1/127 of its block's max) now and then:
within 2 % of the logits' range, the bound of the oracle's mode (a) (test_bonsai.py)."""

from __future__ import annotations

import numpy as np
import pytest

import ggml_lib
from tribit import _core
from tribit.model.model import load

GGML_TYPE_F32 = 0  # type_k / type_v of llama.cpp's KV cache
BOUND = 2e-2  # of the logits' range, when the orders differ


def _greedy(next_logits, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    tokens, steps = [], []
    logits = next_logits(prompt)
    for _ in range(n):
        steps.append(logits.copy())
        tokens.append(int(np.argmax(logits)))
        logits = next_logits([tokens[-1]])
    return tokens, steps


def check(path, tokens: list[int], starts=(0, 4, 8, 12, 16), prompt_len=8, steps=16) -> bool:
    """Compares `path` in tribit and llama.cpp; returns whether the comparison was exact."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python 0.3.36 not installed")
    exact = ggml_lib.load().avx512
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=128,
        logits_all=True,
        verbose=False,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
    )
    llm.eval(tokens)
    theirs = np.array(llm.scores[: len(tokens)], np.float32)  # a copy: eval overwrites scores

    def theirs_next(toks):
        llm.eval(toks)
        return np.asarray(llm.scores[llm.n_tokens - 1], np.float32)

    runs = {}
    for start in starts:
        llm.reset()
        runs[start] = _greedy(theirs_next, tokens[start : start + prompt_len], steps)
    for isa in _core.runnable_isas():
        model = load(path, n_threads=2, kv_type="f32", isa=isa)
        ours = model.forward(tokens, 0, logits="all").copy()
        if not exact:
            assert np.abs(ours - theirs).max() <= BOUND * np.abs(theirs).max(), isa
            continue
        assert np.array_equal(ours, theirs), (isa, (ours != theirs).any(axis=1).nonzero())

        def ours_next(toks, model=model):
            return model.forward(toks, None)[-1]

        for start, (their_tokens, their_steps) in runs.items():
            model.reset()
            our_tokens, our_steps = _greedy(ours_next, tokens[start : start + prompt_len], steps)
            assert our_tokens == their_tokens, (isa, start)
            for i, (a, b) in enumerate(zip(our_steps, their_steps, strict=True)):
                assert np.array_equal(a, b), (isa, start, i)
    return exact
