"""Perplexity (llama-perplexity method): window plan, scoring, native model vs numpy oracle."""

import json
import math

import numpy as np
import pytest

import tribit
from tiny_models import tiny_model
from tribit.bench.perplexity import (
    log_softmax_at,
    model_chunk_logits,
    model_perplexity,
    perplexity,
    plan_windows,
)
from tribit.errors import TribitError
from tribit.model import reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("ppl") / "tiny.gguf"
    tiny_model(path, n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_vocab=300, seed=3)
    return path


def test_plan_windows_chunks_and_stride():
    # 100 tokens, ctx 32: 3 chunks, second half scored (rows 16..30)
    assert plan_windows(100, 32) == [(0, 16), (32, 16), (64, 16)]
    # stride 8: windows every 8 tokens, last 8 predictions scored: rows 23..30
    w = plan_windows(100, 32, stride=8)
    assert w[0] == (0, 23) and w[1] == (8, 23)
    assert len(w) == (100 - 32 + 7) // 8
    assert all(s + 32 <= 100 for s, _ in w)
    assert plan_windows(31, 32) == []
    with pytest.raises(TribitError, match="stride"):
        plan_windows(100, 32, stride=32)


def test_log_softmax_at_matches_direct():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 50)).astype(np.float32) * 10
    t = rng.integers(0, 50, 5)
    direct = np.log(np.exp(z.astype(np.float64)) / np.exp(z.astype(np.float64)).sum(1)[:, None])
    np.testing.assert_allclose(log_softmax_at(z, t), direct[np.arange(5), t], rtol=1e-12)


def test_uniform_logits_give_vocab_size():
    """Constant logits: every token has p = 1/V, so PPL = V exactly and the ± is nan."""
    v = 37

    def zeros(w, m):
        return np.zeros((int(m.sum()), v), np.float32)

    res = perplexity([i % v for i in range(64)], zeros, 16)
    assert res.ppl == pytest.approx(v, rel=1e-12)
    assert res.n_chunks == 4 and res.n_scored == 4 * 7
    assert math.isnan(res.ppl_err)
    with pytest.raises(TribitError, match="out of range"):
        perplexity(list(range(64)), lambda w, m: np.zeros((int(m.sum()), v), np.float32), 16)


def test_scores_the_right_targets():
    """A fake model that puts all mass on token (prev + 1) is perfect on a counting stream
    only if row j is scored against token start + j + 1."""
    v = 50
    toks = [i % v for i in range(200)]

    def logits(window, want):
        rows = np.full((len(window), v), -30.0, np.float32)
        for j, t in enumerate(window):
            rows[j, (t + 1) % v] = 0.0
        return rows[want]

    for stride in (None, 5):
        res = perplexity(toks, logits, 20, stride=stride)
        assert res.ppl == pytest.approx(1.0, abs=1e-6)
    # shifted by one: every scored token is wrong
    bad = perplexity(toks, lambda w, m: logits([t + 1 for t in w], m), 20)
    assert bad.ppl > 1e3


def test_error_estimate_is_llama_cpp_formula():
    rng = np.random.default_rng(1)
    v, n_ctx = 11, 8
    toks = rng.integers(0, v, 40).tolist()
    table = rng.standard_normal((40, v)).astype(np.float32)
    res = perplexity(toks, lambda w, m: table[: len(w)][m], n_ctx)
    nll = []
    for start, first in plan_windows(40, n_ctx):
        rows = table[first : n_ctx - 1]
        tg = np.array(toks[start + first + 1 : start + n_ctx])
        nll += (-log_softmax_at(rows, tg)).tolist()
    nll = np.array(nll)
    ppl = math.exp(nll.mean())
    assert res.ppl == pytest.approx(ppl, rel=1e-12)
    assert res.ppl_err == pytest.approx(ppl * math.sqrt(nll.var() / (nll.size - 1)), rel=1e-9)


def test_bos_replaces_first_token_of_each_window():
    seen = []

    def logits(window, want):
        seen.append(window[0])
        return np.zeros((int(want.sum()), 10), np.float32)

    perplexity(list(range(1, 10)) * 4, logits, 8, bos_id=0)
    assert seen and all(t == 0 for t in seen)


def test_native_matches_oracle(tiny):
    """The native model's perplexity equals the numpy oracle's within a tight tolerance,
    whether a chunk runs in one forward or in batches."""
    rng = np.random.default_rng(7)
    toks = rng.integers(0, 300, 3 * 48 + 5).tolist()
    n_ctx = 48
    ref_w = reference.load_reference(tiny)
    ref = perplexity(toks, lambda w, m: reference.forward(ref_w, w)[m], n_ctx, bos_id=256)
    model = tribit.load(tiny, n_threads=1, n_ctx=n_ctx)
    for batch in (None, 7):
        got = perplexity(toks, model_chunk_logits(model, batch), n_ctx, bos_id=256)
        assert got.n_scored == ref.n_scored == 3 * 23
        # f32 vs float64 moves a few int8 activation roundings: up to ~1.5e-3 relative
        # here (KLD ~5e-4, the runtime tests' bound)
        assert got.ppl == pytest.approx(ref.ppl, rel=3e-3)
        assert got.ppl_err == pytest.approx(ref.ppl_err, rel=1e-2)
    # strided windows too
    ref_s = perplexity(toks, lambda w, m: reference.forward(ref_w, w)[m], n_ctx, stride=16)
    got_s = perplexity(toks, model_chunk_logits(model, 16), n_ctx, stride=16)
    assert got_s.ppl == pytest.approx(ref_s.ppl, rel=3e-3)
    # the tolerance tells models apart: a one-op change (SiLU for ReLU^2) is far outside it
    wrong = perplexity(
        toks,
        lambda w, m: reference.forward(ref_w, w, act=lambda g: g / (1 + np.exp(-g)))[m],
        n_ctx,
        bos_id=256,
    )
    assert abs(wrong.ppl / ref.ppl - 1) > 3e-2, wrong.ppl
    # a random model is far from perfect but far better than nothing: sanity of scale
    assert 1.0 < got.ppl < 1e4


def test_model_perplexity_text_and_errors(tiny):
    model = tribit.load(tiny, n_threads=1, n_ctx=64)
    text = "the quick brown fox jumps over the lazy dog. " * 8
    res = model_perplexity(model, text=text, n_ctx=32)
    toks = model.tokenize(text)
    assert res.n_tokens == len(toks) and res.n_chunks == len(toks) // 32
    assert res.ppl > 1.0
    with pytest.raises(TribitError, match="tokens"):
        model_perplexity(model, text="short", n_ctx=32)
    with pytest.raises(TribitError, match="larger"):
        model_perplexity(model, tokens=list(range(500)), n_ctx=128)


def test_cli_perplexity(tiny, tmp_path, capsys):
    from tribit.cli.main import main

    f = tmp_path / "t.txt"
    f.write_text("Mary went to the kitchen. John moved to the garden. " * 6)
    assert (
        main(
            [
                "perplexity",
                "-m",
                str(tiny),
                "-f",
                str(f),
                "-c",
                "32",
                "-t",
                "1",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["n_ctx"] == 32 and out["n_chunks"] >= 1 and out["ppl"] > 1.0
    assert (
        main(["perplexity", "-m", str(tiny), "-f", str(f), "-c", "32", "-b", "8", "-t", "1"]) == 0
    )
    text = capsys.readouterr().out
    assert "Final estimate: PPL = " in text
    assert f"{out['ppl']:.4f}" in text  # batched run gives the same figure
