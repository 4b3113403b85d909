"""The one generation core: BatchGenerator (batched == alone), the model's slot records and
prefix reuse, the library and the server answering alike, and a public API that holds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tribit  # noqa: E402
from tiny_models import tiny_model  # noqa: E402
from tribit import SamplerParams  # noqa: E402
from tribit.completion import create_chat_completion, create_completion  # noqa: E402
from tribit.generation import BatchGenerator, generate, stream_generate  # noqa: E402
from tribit.model.slots import SlotBusyError, SlotTable  # noqa: E402

BOS, EOS, EOT = 256, 257, 258
N_CTX = 64


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("core") / "m.gguf", n_vocab=300, ctx=512)


@pytest.fixture()
def model(path):
    return tribit.load(path, n_threads=1, n_ctx=N_CTX, n_seq=4)


# -- the slot table ---------------------------------------------------------------------
def test_slot_records_follow_writes():
    t = SlotTable(2)
    t.record([5, 6, 7], [0, 1, 2], [0, 0, 0])
    t.record([9], [0], [1])
    assert t.tokens(0) == [5, 6, 7] and t.tokens(1) == [9]
    t.record([8], [1], [0])  # rewriting position 1: what followed is another prefix now
    assert t.tokens(0) == [5, 8]
    t.record([4], [5], [0])  # past the end: the record does not vouch for 2..4, stays
    assert t.tokens(0) == [5, 8]
    t.forget_from([1, 2], [1, 1])
    assert t.tokens(1) == [9]
    t.forget_from([0], [1])
    assert t.tokens(1) == []
    t.trim(0, 1)
    assert t.tokens(0) == [5]


def test_slot_claims_prefer_the_longest_prefix_then_the_oldest():
    t = SlotTable(3)
    t.record([1, 2, 3], [0, 1, 2], [0] * 3)
    t.record([1, 2], [0, 1], [1] * 2)
    for s in range(3):
        t.release(s)  # released in order 0, 1, 2
    assert t.claim([1, 2, 3, 4]) == (0, 3)
    assert t.claim([1, 2, 9]) == (1, 2)
    assert t.claim([7]) == (2, 0)
    with pytest.raises(SlotBusyError, match="all 3"):
        t.claim([7])
    with pytest.raises(SlotBusyError, match="slot 1 is in use"):
        t.claim([7], seq=1)
    t.release(0)
    t.release(2)
    assert t.claim([5])[0] == 2  # no prefix anywhere: an empty slot first
    t.record([5, 6], [0, 1], [2, 2])
    t.release(1)
    t.release(2)
    assert t.claim([1, 8, 8, 8, 8])[0] == 0  # a shared first token only: the LRU slot


def test_model_forward_keeps_the_record(model):
    model.forward([1, 2, 3, 4], 0, 1)
    assert model.cached_tokens(1) == [1, 2, 3, 4]
    model.forward([9], 2, 1)  # a direct write behind everyone's back
    assert model.cached_tokens(1) == [1, 2, 9]
    model.trim(1, 1)
    assert model.cached_tokens(1) == [1]
    with pytest.raises(tribit.ModelError):
        model.forward([1, 10**6], 1, 1)  # refused before anything is written
    assert model.cached_tokens(1) == [1]
    model.reset(1)
    assert model.cached_tokens(1) == []


# -- the batch ------------------------------------------------------------------------
def _run(batch: BatchGenerator, joins: dict[int, list[tuple]]) -> dict[int, list]:
    """Step until empty, inserting joins[step] = [(name, prompt, kwargs)] at each step."""
    out, names, step = {}, {}, 0
    while True:
        for name, prompt, kw in joins.get(step, []):
            names[batch.insert(prompt, **kw)] = name
            out[name] = []
        if not len(batch) and step > max(joins):
            return out
        for c in batch.step():
            out[names[c.uid]].append(c)
        step += 1


def _alone(model, prompt, **kw):
    model.reset()
    return list(stream_generate(model, prompt, reuse_cache=False, **kw))


def test_batched_equals_alone(model):
    ascii_ = SamplerParams(logit_bias={EOS: -100.0, EOT: -100.0})
    specs = {
        "a": ([BOS, 65, 66, 67], dict(max_tokens=9, sampling=ascii_)),
        "b": (
            list(range(BOS - 40, BOS)),
            dict(max_tokens=12, stop=["q"], sampling=SamplerParams(temperature=0.9, seed=3)),
        ),
        "c": ([BOS, 10, 20], dict(max_tokens=5, sampling=SamplerParams(repeat_penalty=1.3))),
        "d": ([BOS] + [100] * 30, dict(max_tokens=7)),
    }
    want = {n: _alone(model, p, **kw) for n, (p, kw) in specs.items()}
    model.reset()
    batch = BatchGenerator(model, prefill_chunk=8, batch_tokens=20)
    joins = {
        0: [("a", *specs["a"]), ("b", *specs["b"])],
        3: [("c", *specs["c"])],
        5: [("d", *specs["d"])],
    }
    got = _run(batch, joins)
    for name in specs:
        assert [c.token for c in got[name]] == [c.token for c in want[name]], name
        assert [c.text for c in got[name]] == [c.text for c in want[name]], name
        assert got[name][-1].finish_reason == want[name][-1].finish_reason
        assert got[name][-1].usage == want[name][-1].usage
    assert model.slots.n_free() == 4


def test_a_new_sequence_takes_the_slot_holding_its_prefix(model):
    history = [BOS] + list(range(40, 80))
    first = list(stream_generate(model, history, max_tokens=4, seq=None))
    answer = [c.token for c in first]
    follow = history + answer + [90, 91]
    # another conversation in between, on another slot
    list(stream_generate(model, [BOS, 7, 7, 7], max_tokens=2, seq=None))
    chunks = list(stream_generate(model, follow, max_tokens=5, seq=None))
    assert chunks[-1].prompt_cached_tokens == len(history) + len(answer) - 1
    fresh = _alone(model, follow, max_tokens=5)
    assert [c.token for c in chunks] == [c.token for c in fresh]


def test_generate_step_does_not_stop_at_eog_and_releases_its_slot(model):
    force_eos = [lambda toks, logits: np.where(np.arange(logits.size) == EOS, 50.0, logits)]
    steps = tribit.generate_step(model, [BOS, 1], logits_processors=force_eos, seq=2)
    toks = [next(steps) for _ in range(3)]
    assert toks == [EOS] * 3
    assert model.slots.is_busy(2)
    steps.close()
    assert not model.slots.is_busy(2)
    # stream_generate stops at the same token: it is not part of the completion
    chunks = list(stream_generate(model, [BOS, 1], logits_processors=force_eos))
    assert len(chunks) == 1 and chunks[0].finish_reason == "stop"
    assert chunks[0].usage["completion_tokens"] == 0 and chunks[0].generation_tokens == 1


def test_a_busy_slot_is_refused_not_shared(model):
    it = stream_generate(model, [BOS, 1, 2], max_tokens=50, seq=0)
    next(it)
    with pytest.raises(SlotBusyError, match="slot 0"):
        next(stream_generate(model, [BOS, 3], seq=0))
    it.close()
    assert generate(model, [BOS, 3], max_tokens=2, seq=0) is not None


def test_prompt_of_exactly_n_ctx_gives_one_token(model):
    prompt = [BOS] + [65] * (N_CTX - 1)
    chunks = list(stream_generate(model, prompt, max_tokens=10))
    assert len(chunks) == 1 and chunks[0].finish_reason in ("length", "stop")
    with pytest.raises(tribit.ContextLengthError):
        stream_generate(model, prompt + [65])


def test_chat_session_samples_one_stream_across_turns(model):
    from tribit.sampling import make_logits_processors, make_sampler

    params = SamplerParams(temperature=1.0, seed=7, logit_bias={EOS: -100.0, EOT: -100.0})
    session = tribit.ChatSession(model, max_tokens=6, sampling=params)
    turns = [session.send("hello"), session.send("again")]
    # the same draws from one sampler, turn after turn (not reseeded per turn)
    sampler, procs = make_sampler(params), make_logits_processors(params)
    replay = tribit.ChatSession(model, max_tokens=6, sampler=sampler, logits_processors=procs)
    assert [replay.send("hello"), replay.send("again")] == turns
    # what a sampler reseeded for the second turn draws: another answer (the old bug)
    reseeded = tribit.ChatSession(model, max_tokens=6, sampling=params)
    reseeded.messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": turns[0]},
    ]
    assert reseeded.send("again") != turns[1]


def test_developer_role_is_the_system_turn(model):
    a = create_chat_completion(
        model,
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
    )
    b = create_chat_completion(
        model,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
    )
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]


# -- the library and the server -------------------------------------------------------
CASES = [
    ("/v1/completions", {"prompt": "The cat", "max_tokens": 8}),
    ("/v1/completions", {"prompt": "abc", "max_tokens": 12, "stop": ["e", "zz"]}),
    ("/v1/completions", {"prompt": [BOS] + [70] * (N_CTX - 1), "max_tokens": 5}),  # at the limit
    ("/v1/completions", {"prompt": [BOS] + [71] * (N_CTX - 4), "max_tokens": 50}),  # runs into it
    ("/v1/completions", {"prompt": "x", "max_tokens": 3, "logit_bias": {str(BOS): 100}}),
    ("/v1/completions", {"prompt": "x", "max_tokens": 4, "logit_bias": {str(EOT): 100}}),
    (
        "/v1/completions",
        {
            "prompt": "aaaa",
            "max_tokens": 8,
            "repeat_penalty": 1.5,
            "repeat_last_n": 2,
            "temperature": 0.7,
            "seed": 5,
        },
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7}),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "developer", "content": "D"}, {"role": "user", "content": "Q"}],
            "max_tokens": 9,
            "stop": "a",
        },
    ),
]


def _library(model, route, body, stream):
    kw = {k: v for k, v in body.items() if k not in ("prompt", "messages")}
    kw.setdefault("temperature", 0.0)
    params = dict(top_k=0, top_p=1.0, min_p=0.0)  # the server's (OpenAI's) defaults
    if route == "/v1/completions":
        return create_completion(
            model, body["prompt"], stream=stream, include_usage=True, **params, **kw
        )
    return create_chat_completion(
        model, body["messages"], stream=stream, include_usage=True, **params, **kw
    )


def _summary(obj_or_chunks, stream: bool, chat: bool):
    """(text, finish_reason, usage) of a response or of a stream of chunks."""
    if not stream:
        choice = obj_or_chunks["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        return text, choice["finish_reason"], obj_or_chunks["usage"]
    text, finish, usage = "", None, None
    for c in obj_or_chunks:
        if c.get("usage"):
            usage = c["usage"]
        for ch in c["choices"]:
            text += (ch["delta"].get("content") or "") if chat else ch["text"]
            finish = ch["finish_reason"] or finish
    return text, finish, usage


def test_library_and_server_give_the_same_answers(path, model):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from server_process import serving

    with serving(path, "--parallel", "2", "-c", str(N_CTX), "-t", "1") as base:
        for route, body in CASES:
            chat = "chat" in route
            for stream in (False, True):
                req = {
                    "temperature": 0.0,
                    **body,
                    "stream": stream,
                    "stream_options": {"include_usage": True},
                }
                if stream:
                    with httpx.stream("POST", base + route, json=req, timeout=60) as r:
                        assert r.status_code == 200, r.read()
                        lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
                    assert lines[-1] == "[DONE]"
                    served = _summary([json.loads(x) for x in lines[:-1]], True, chat)
                else:
                    r = httpx.post(base + route, json=req, timeout=60)
                    assert r.status_code == 200, r.text
                    served = _summary(r.json(), False, chat)
                mine = _summary(_library(model, route, body, stream), stream, chat)
                assert mine == served, (route, body, stream)
        # the server reuses cached prefixes across requests (metrics count them)
        long = {"prompt": [BOS] + list(range(1, 40)), "max_tokens": 2, "temperature": 0}
        httpx.post(base + "/v1/completions", json=long, timeout=60)
        before = _metric(httpx.get(base + "/metrics").text, "prompt_tokens_cached_total")
        long["prompt"] = long["prompt"] + [41, 42]
        r = httpx.post(base + "/v1/completions", json=long, timeout=60).json()
        after = _metric(httpx.get(base + "/metrics").text, "prompt_tokens_cached_total")
        assert after - before >= 39 and r["timings"]["cache_n"] >= 39
        r2 = httpx.post(
            base + "/v1/completions", json={**long, "cache_prompt": False}, timeout=60
        ).json()
        assert r2["timings"]["cache_n"] == 0 and r2["choices"] == r["choices"]


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(f"tribit_{name} "))
    return float(line.split()[1])


# -- the public API -------------------------------------------------------------------
def test_public_names_hold_in_a_fresh_interpreter():
    code = textwrap.dedent("""
        import importlib, inspect, pkgutil
        import tribit
        assert inspect.isfunction(tribit.generate)
        m = tribit.load(n_threads=1)
        for info in pkgutil.iter_modules(tribit.__path__):
            if info.name not in ("__main__", "train"):
                importlib.import_module("tribit." + info.name)
        for name in tribit.__all__:
            obj = getattr(tribit, name)
            assert not inspect.ismodule(obj), name
        assert inspect.isfunction(tribit.generate) and inspect.isfunction(tribit.load)
        assert isinstance(m, tribit.Model)
        for meth in ("generate", "stream_generate", "create_completion",
                     "create_chat_completion"):
            assert meth in vars(tribit.Model), meth
        out = m.create_completion("Mary went to the garden. Where is Mary?\\nAnswer:",
                                  max_tokens=6, temperature=0)
        assert out["choices"][0]["text"].strip().startswith("Mary is in the")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
