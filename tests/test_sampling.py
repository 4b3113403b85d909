"""Sampling chain: exact survivors of each truncation on hand-made distributions, penalties
and bias arithmetic, chain order, greedy, seeds."""

import math

import numpy as np
import pytest

from tribit.errors import TribitError
from tribit.sampling import (
    ChainSampler,
    SamplerParams,
    make_logits_processors,
    make_sampler,
    sample,
)

# probabilities 0.5, 0.2, 0.15, 0.1, 0.05 as logits
PROBS = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
LOGITS = np.log(PROBS).astype(np.float32)


def survivors(logits, **kw) -> list[int]:
    ids, _ = ChainSampler(SamplerParams(temperature=1.0, **kw)).candidates(np.asarray(logits))
    return ids.tolist()


def test_top_k():
    x = np.array([1.0, 3.0, 2.0, 3.0, 0.0, -1.0], np.float32)
    assert survivors(x, top_k=2) == [1, 3]
    assert survivors(x, top_k=3) == [1, 3, 2]
    assert survivors(x, top_k=1) == [1]  # tie at the top: the lowest id
    assert survivors(x, top_k=0) == [1, 3, 2, 0, 4, 5]  # off; sorted by logit, then id
    assert survivors(x, top_k=100) == [1, 3, 2, 0, 4, 5]
    y = np.array([5.0, 1.0, 1.0, 1.0, 0.0], np.float32)
    assert survivors(y, top_k=3) == [0, 1, 2]  # ties at the cut: the lowest ids


def test_top_p():
    assert survivors(LOGITS, top_p=0.3) == [0]
    assert survivors(LOGITS, top_p=0.6) == [0, 1]
    assert survivors(LOGITS, top_p=0.86) == [0, 1, 2, 3]
    assert survivors(LOGITS, top_p=1.0) == [0, 1, 2, 3, 4]
    assert survivors(LOGITS, top_p=0.0) == [0]
    assert survivors(LOGITS, top_p=0.3, min_keep=3) == [0, 1, 2]


def test_min_p():
    assert survivors(LOGITS, min_p=0.25) == [0, 1, 2]  # p >= 0.125
    assert survivors(LOGITS, min_p=0.35) == [0, 1]  # p >= 0.175
    assert survivors(LOGITS, min_p=0.05) == [0, 1, 2, 3, 4]
    assert survivors(LOGITS, min_p=0.99) == [0]


def test_typical_p():
    # entropy 1.3331; |-log p - H| = 0.640, 0.276, 0.564, 0.970, 1.663 -> order 1, 2, 0, 3, 4
    # cumulative 0.2, 0.35, 0.85, 0.95, 1.0; kept until it exceeds p; result in logit order
    assert survivors(LOGITS, typical_p=0.1) == [1]
    assert survivors(LOGITS, typical_p=0.3) == [1, 2]
    assert survivors(LOGITS, typical_p=0.5) == [0, 1, 2]
    assert survivors(LOGITS, typical_p=0.9) == [0, 1, 2, 3]


def test_truncations_compose_in_llama_cpp_order():
    # each step renormalises what survived the previous one (llama.cpp's softmax per step).
    # top-k 4: p = 0.526, 0.211, 0.158, 0.105; entropy 1.194; |-log p - H| = 0.552, 0.364,
    # 0.652, 1.057 -> order 1, 0, 2, 3, cumulative 0.211, 0.737 -> typical 0.5 keeps {1, 0}
    assert survivors(LOGITS, top_k=4, typical_p=0.5) == [0, 1]
    # then p = 0.714, 0.286: top-p 0.6 keeps one (0.5 < 0.6 had it not been renormalised)
    assert survivors(LOGITS, top_k=4, typical_p=0.5, top_p=0.6) == [0]
    assert survivors(LOGITS, top_k=4, typical_p=0.5, top_p=0.75) == [0, 1]
    assert survivors(LOGITS, top_k=4, typical_p=0.5, top_p=0.75, min_p=0.5) == [0]
    assert survivors(LOGITS, top_k=4, typical_p=0.5, top_p=0.75, min_p=0.3) == [0, 1]


def test_penalties_arithmetic():
    x = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    params = SamplerParams(repeat_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    (proc,) = make_logits_processors(params)
    # id 0 seen once: 2/2 - 0.5 - 0.25; id 1 twice: -2*2 - 1.0 - 0.25; id 3 once: 0.5/2 - 0.75
    np.testing.assert_array_equal(proc([0, 1, 1, 3], x), [0.25, -5.25, 1.0, -0.5])
    np.testing.assert_array_equal(x, [2.0, -2.0, 1.0, 0.5])  # input untouched
    window = make_logits_processors(
        SamplerParams(
            repeat_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25, repeat_last_n=2
        )
    )[0]
    np.testing.assert_array_equal(window([0, 1, 1, 3], x), [2.0, -4.75, 1.0, -0.5])
    everything = make_logits_processors(SamplerParams(repeat_penalty=2.0, repeat_last_n=-1))[0]
    np.testing.assert_array_equal(everything([0] + [2] * 100, x), [1.0, -2.0, 0.5, 0.5])
    assert make_logits_processors(SamplerParams(repeat_penalty=2.0, repeat_last_n=0)) == []
    assert make_logits_processors(SamplerParams()) == []


def test_logit_bias_then_penalties():
    x = np.array([1.0, 0.0, 0.0], np.float32)
    params = SamplerParams(logit_bias={0: 1.0, 2: -math.inf}, repeat_penalty=2.0)
    out = x
    for proc in make_logits_processors(params):
        out = proc([0], out)
    # bias first (1 + 1 = 2), then the repeat penalty (2 / 2 = 1): llama.cpp's order
    np.testing.assert_array_equal(out, [1.0, 0.0, -np.inf])
    assert sample(x, SamplerParams(logit_bias={1: 5.0})) == 1
    forced = SamplerParams(temperature=1.0, logit_bias={2: math.inf}, seed=0)
    assert all(sample(x, forced) == 2 for _ in range(5))
    with pytest.raises(TribitError, match="logit_bias names token 7"):
        sample(x, SamplerParams(logit_bias={7: 1.0}))
    with pytest.raises(TribitError, match="-inf"):
        sample(
            x, SamplerParams(temperature=1.0, logit_bias={0: -math.inf, 1: -math.inf, 2: -math.inf})
        )


def test_greedy():
    x = np.array([1.0, 3.0, 2.0, 3.0], np.float32)
    for t in (0.0, -1.0):
        assert make_sampler(SamplerParams(temperature=t, top_k=1, top_p=0.1))(x) == 1
    assert make_sampler(SamplerParams())(x[None, :]) == 1  # (1, n_vocab) rows work too


def test_seed_reproducible_and_distribution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000).astype(np.float32)
    params = SamplerParams(temperature=0.8, top_k=50, top_p=0.95, seed=42)
    a = [make_sampler(params)(x) for _ in range(1)]
    s1, s2 = make_sampler(params), make_sampler(params)
    run1, run2 = [s1(x) for _ in range(50)], [s2(x) for _ in range(50)]
    assert run1 == run2 and a[0] == run1[0]
    s3 = make_sampler(SamplerParams(temperature=0.8, top_k=50, top_p=0.95, seed=43))
    assert [s3(x) for _ in range(50)] != run1
    top50 = set(np.argsort(-x)[:50].tolist())
    assert set(run1) <= top50
    # frequencies follow the softmax of the survivors
    y = np.array([0.0, math.log(3.0), -5.0], np.float32)
    s = make_sampler(SamplerParams(temperature=1.0, top_k=2, seed=1))
    draws = np.array([s(y) for _ in range(4000)])
    assert not (draws == 2).any()
    assert abs((draws == 1).mean() - 0.75) < 0.03


def test_temperature_reshapes_survivors_only():
    s = ChainSampler(SamplerParams(temperature=1000.0, top_k=3))
    ids, probs = s.probs(LOGITS)
    assert ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(probs, 1 / 3, atol=1e-3)
    ids, probs = ChainSampler(SamplerParams(temperature=0.5, top_k=2)).probs(LOGITS)
    np.testing.assert_allclose(
        probs, [0.5**2 / (0.5**2 + 0.2**2), 0.2**2 / (0.5**2 + 0.2**2)], rtol=1e-5
    )


def test_full_vocab_logits():
    x = np.random.default_rng(3).normal(size=128256).astype(np.float32)
    params = SamplerParams(
        temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, seed=0, repeat_penalty=1.1
    )
    tok = sample(x, params, tokens=list(range(100)))
    assert tok in set(np.argsort(-x)[:40].tolist())
    assert sample(x) == int(np.argmax(x))


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": float("nan")},
        {"top_p": float("inf")},
        {"repeat_penalty": 0.0},
        {"repeat_last_n": -2},
        {"top_k": 1.5},
        {"seed": -1},
        {"logit_bias": {-1: 1.0}},
        {"logit_bias": {1: float("nan")}},
    ],
)
def test_bad_params(bad):
    with pytest.raises(TribitError):
        make_sampler(SamplerParams(**bad))
    with pytest.raises(TribitError):
        make_logits_processors(SamplerParams(**bad))


def test_nan_logits_refused():
    with pytest.raises(TribitError, match="NaN"):
        make_sampler(SamplerParams(temperature=1.0))(np.array([0.0, np.nan], np.float32))


def _reference_survivors(x, top_p=1.0, typical_p=1.0, min_p=0.0):
    """Brute force: full sorts at every step (the definition)."""
    ids = np.arange(x.size)
    vals = x.astype(np.float64)

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    if typical_p < 1:
        pr = softmax(vals)
        shifted = np.abs(-np.log(pr) - -(pr * np.log(pr)).sum())
        o = np.lexsort((ids, shifted))
        cum = np.cumsum(pr[o])
        last = next((i + 1 for i, c in enumerate(cum) if c > typical_p), len(o))
        ids, vals = ids[o[:last]], vals[o[:last]]
    if top_p < 1:
        o = np.lexsort((ids, -vals))
        cum = np.cumsum(softmax(vals)[o])
        last = next((i + 1 for i, c in enumerate(cum) if c >= top_p), len(o))
        ids, vals = ids[o[:last]], vals[o[:last]]
    if min_p > 0:
        keep = vals >= vals.max() + math.log(min_p)
        ids = ids[keep]
    return sorted(ids.tolist())


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])  # flat to peaked: the growing sort is used
def test_fast_truncation_equals_full_sort(scale):
    x = (np.random.default_rng(int(scale * 10)).normal(size=20000) * scale).astype(np.float32)
    for kw in (
        {"top_p": 0.9},
        {"top_p": 0.5},
        {"typical_p": 0.7},
        {"typical_p": 0.95},
        {"min_p": 0.01},
        {"top_p": 0.95, "typical_p": 0.9, "min_p": 0.001},
    ):
        assert sorted(survivors(x, **kw)) == _reference_survivors(x, **kw), kw
