"""tribit.generate on tiny random models: greedy decoding against a full recompute,
streaming, stop strings, end-of-generation, max_tokens, seeds, context limits, prompt cache."""

from __future__ import annotations

import numpy as np
import pytest

import tribit  # noqa: E402
from tiny_models import EOS, EOT, ascii_only  # noqa: E402
from tribit.errors import TribitError  # noqa: E402
from tribit.generation import (  # noqa: E402
    ContextLengthError,
    StopMatcher,
    generate,
    generate_step,
    stream_generate,
)


def no_end(tokens, logits):
    out = logits.copy()
    out[[EOS, EOT]] = -np.inf
    return out


@pytest.fixture(scope="module")
def model_path(tiny_file):
    return tiny_file(seed=3, ctx=128)


@pytest.fixture(scope="module")
def model(model_path):
    return tribit.load(model_path, n_threads=1)


@pytest.mark.parametrize("reuse", [False, True])
def test_steps_match_full_recompute(model, reuse):
    # the logits of every step equal those of a fresh forward over everything so far
    seen = []

    def spy(tokens, logits):
        seen.append((list(tokens), logits.copy()))
        return logits

    prompt = model.tokenize("Mary went to the kitchen.")
    if reuse:  # leave part of the prompt in the cache, then a different tail
        generate(model, prompt[:5] + [ord("Z")] * 3, max_tokens=2)
    steps = generate_step(model, prompt, logits_processors=[spy], reuse_cache=reuse)
    got = [next(steps) for _ in range(6)]
    steps.close()
    assert [t for t, _ in seen] == [prompt + got[:i] for i in range(6)]
    full = model.logits(prompt + got[:-1])
    for i, (_, logits) in enumerate(seen):
        np.testing.assert_allclose(logits, full[len(prompt) - 1 + i], rtol=0, atol=1e-4)
        assert got[i] == int(np.argmax(logits))  # greedy without a sampler


def test_greedy_is_deterministic_and_cache_independent(model):
    a = generate(model, "Where is Mary?", max_tokens=12, logits_processors=[ascii_only])
    b = generate(model, "Where is Mary?", max_tokens=12, logits_processors=[ascii_only])
    c = generate(
        model, "Where is Mary?", max_tokens=12, logits_processors=[ascii_only], reuse_cache=False
    )
    assert a == b == c
    assert len(a) == 12  # printable ASCII only: one character per token


def test_generate_is_concatenation_of_stream(model):
    kw = dict(max_tokens=20, temperature=1.0, seed=5)
    chunks = list(stream_generate(model, "The apple", **kw))
    assert "".join(c.text for c in chunks) == generate(model, "The apple", **kw)
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].finish_reason in ("stop", "length")
    assert [c.generation_tokens for c in chunks] == list(range(1, len(chunks) + 1))


def test_statistics(model):
    model.reset()
    chunks = list(
        stream_generate(
            model,
            "John is in the office.",
            max_tokens=6,
            logits_processors=[no_end],
            reuse_cache=False,
        )
    )
    last = chunks[-1]
    n_prompt = len(model.tokenize("John is in the office."))
    assert last.prompt_tokens == n_prompt and last.prompt_cached_tokens == 0
    assert last.generation_tokens == 6 and last.finish_reason == "length"
    assert last.prompt_time_s > 0 and last.prompt_tps > 0
    assert last.generation_time_s > 0 and last.generation_tps > 0
    assert all(c.prompt_time_s == last.prompt_time_s for c in chunks)


def test_max_tokens(model):
    for n in (1, 3, 7):
        chunks = list(stream_generate(model, "abc", max_tokens=n, logits_processors=[no_end]))
        assert len(chunks) == n and chunks[-1].finish_reason == "length"
    assert generate(model, "abc", max_tokens=0) == ""


@pytest.mark.parametrize("end", [EOS, EOT])
def test_end_of_generation_token_stops(model, end):
    prompt = model.tokenize("Sandra")

    def end_at_4(tokens, logits):
        out = ascii_only(tokens, logits)
        out[[EOS, EOT]] = -np.inf
        if len(tokens) == len(prompt) + 3:
            out[end] = 1e9
        return out

    chunks = list(stream_generate(model, prompt, max_tokens=50, logits_processors=[end_at_4]))
    assert len(chunks) == 4
    assert chunks[-1].finish_reason == "stop" and chunks[-1].token == end
    text = "".join(c.text for c in chunks)
    assert len(text) == 3 and "<|" not in text  # the end token itself is not printed


def _sampled_text(model, n=40):
    return generate(
        model,
        "Daniel",
        max_tokens=n,
        temperature=1.5,
        seed=11,
        logits_processors=[ascii_only, no_end],
    )


def test_stop_string_cut_exactly(model):
    full = _sampled_text(model)
    assert len(full) == 40
    for start, width in ((10, 3), (0, 1), (25, 5), (37, 3)):
        stop = full[start : start + width]
        first = full.find(stop)
        chunks = list(
            stream_generate(
                model,
                "Daniel",
                max_tokens=40,
                temperature=1.5,
                seed=11,
                logits_processors=[ascii_only, no_end],
                stop=[stop],
            )
        )
        text = "".join(c.text for c in chunks)
        assert text == full[:first]
        assert chunks[-1].finish_reason == "stop"
        # the stop text ends with the last token generated
        assert chunks[-1].generation_tokens == first + width


def test_stop_earliest_of_several_and_absent(model):
    full = _sampled_text(model)
    a, b = full[20:23], full[8:10]
    text = generate(
        model,
        "Daniel",
        max_tokens=40,
        temperature=1.5,
        seed=11,
        logits_processors=[ascii_only, no_end],
        stop=[a, b],
    )
    assert text == full[: min(full.find(a), full.find(b))]
    absent = "\x01never"
    chunks = list(
        stream_generate(
            model,
            "Daniel",
            max_tokens=40,
            temperature=1.5,
            seed=11,
            logits_processors=[ascii_only, no_end],
            stop=absent,
        )
    )
    assert "".join(c.text for c in chunks) == full and chunks[-1].finish_reason == "length"


def test_stop_matcher_any_split():
    rng = np.random.default_rng(0)
    text = "the cat sat on the mat, then the dog sat on the cat"
    for stops, want in (
        (["sat on the m"], "the cat "),
        (["dog", "then"], "the cat sat on the mat, "),
        (["zzz", "mat,"], "the cat sat on the "),
        (["xyz"], text),
    ):
        for _ in range(20):
            cuts = sorted(rng.choice(len(text), size=rng.integers(0, 12), replace=False))
            pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            m, out, stopped = StopMatcher(stops), [], False
            for p in pieces:
                t, stopped = m.push(p)
                out.append(t)
                if stopped:
                    break
            if not stopped:
                out.append(m.flush())
            assert "".join(out) == want
            assert stopped == (want != text)


def test_held_back_text_is_released():
    m = StopMatcher(["abc"])
    assert m.push("xxab") == ("xx", False)  # "ab" might start "abc"
    assert m.push("d") == ("abd", False)
    assert m.push("a") == ("", False)
    assert m.flush() == "a"


def test_seeds_reproducible(model):
    kw = dict(max_tokens=16, temperature=1.0, logits_processors=[ascii_only, no_end])
    a = generate(model, "Bill", seed=1, **kw)
    assert a == generate(model, "Bill", seed=1, **kw)
    others = {generate(model, "Bill", seed=s, **kw) for s in (2, 3, 4)}
    assert others - {a}  # other seeds give other text


def test_logit_bias_forces_token(model):
    text = generate(model, "x", max_tokens=5, logit_bias={ord("Q"): 100.0})
    assert text == "QQQQQ"


def test_context_overflow_raises(model_path):
    m = tribit.load(model_path, n_threads=1, n_ctx=32)
    with pytest.raises(ContextLengthError) as e:
        stream_generate(m, list(range(65, 65 + 33)))  # raises before the first chunk
    assert e.value.n_prompt_tokens == 33 and e.value.n_ctx == 32
    assert isinstance(e.value, TribitError)
    assert "33" in str(e.value) and "32" in str(e.value)


def test_generation_stops_at_full_context(model_path):
    m = tribit.load(model_path, n_threads=1, n_ctx=32)
    chunks = list(
        stream_generate(m, list(range(65, 65 + 28)), max_tokens=100, logits_processors=[no_end])
    )
    # 28 prompt positions + 4 fed tokens fill 32; the 5th token needs no position
    assert len(chunks) == 5 and chunks[-1].finish_reason == "length"
    full = list(stream_generate(m, list(range(65, 65 + 32)), max_tokens=100))
    assert len(full) == 1 and full[0].finish_reason in ("length", "stop")


def test_bad_arguments_are_errors(model):
    with pytest.raises(TribitError, match="empty"):
        stream_generate(model, [])
    with pytest.raises(TribitError, match="max_tokens"):
        stream_generate(model, "x", max_tokens="5")
    with pytest.raises(TribitError, match="stop"):
        stream_generate(model, "x", stop=[3])
    with pytest.raises(TribitError, match="top_k"):
        stream_generate(model, "x", top_k=1.5)


def test_prompt_cache_reuse_equals_recompute(model):
    base = "Mary moved to the bathroom. John went to the hallway."
    kw = dict(max_tokens=8, logits_processors=[ascii_only])
    first = generate(model, base, **kw)
    longer = base + first + " Where is John?"
    chunks = list(stream_generate(model, longer, **kw))
    assert chunks[-1].prompt_cached_tokens >= len(model.tokenize(base))
    fresh = generate(model, longer, reuse_cache=False, **kw)
    assert "".join(c.text for c in chunks) == fresh
    # the record follows the slot: a reset behind our back is noticed
    model.reset()
    assert model.cached_tokens() == []
    again = list(stream_generate(model, longer, **kw))
    assert again[-1].prompt_cached_tokens == 0
    assert "".join(c.text for c in again) == fresh


def _forcing(model, prompt, data: bytes):
    """A processor that makes the model spell `data` byte by byte (byte token id = byte)."""
    n = len(model.tokenize(prompt))

    def force(tokens, logits):
        out = np.full_like(logits, -np.inf)
        i = len(tokens) - n
        out[data[i] if i < len(data) else EOS] = 0.0
        return out

    return force


def test_multibyte_characters_stream_whole(model):
    data = "é€😀 ok".encode()
    chunks = list(
        stream_generate(model, "x", max_tokens=50, logits_processors=[_forcing(model, "x", data)])
    )
    assert [c.text for c in chunks] == ["", "é", "", "", "€", "", "", "", "😀", " ", "o", "k", ""]
    assert chunks[-1].finish_reason == "stop"
    text = generate(
        model, "x", max_tokens=50, stop="€", logits_processors=[_forcing(model, "x", data)]
    )
    assert text == "é"
    # cut inside a character by max_tokens: the partial character becomes U+FFFD
    assert generate(model, "x", max_tokens=4, logits_processors=[_forcing(model, "x", data)]) == (
        "é\ufffd"
    )
