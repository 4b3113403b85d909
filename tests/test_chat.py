"""tribit.chat: prompts from templates, multi-turn KV reuse (token-equivalent to recomputing
the whole conversation), context overflow handling, OpenAI-shaped results."""

from __future__ import annotations

import numpy as np
import pytest

import tribit  # noqa: E402
from tiny_models import BOS, EOS, EOT, ascii_only, write_tiny  # noqa: E402
from tribit.chat import (  # noqa: E402
    ChatSession,
    chat_prompt_tokens,
    chat_template,
    normalize_messages,
    render_messages,
)
from tribit.completion import create_chat_completion, create_completion  # noqa: E402
from tribit.errors import TribitError  # noqa: E402
from tribit.generation import ContextLengthError, generate  # noqa: E402

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


@pytest.fixture(scope="module")
def model(tiny_file):
    return tribit.load(tiny_file(seed=4), n_threads=1)


@pytest.fixture(scope="module")
def templated(tiny_file):
    path = tiny_file(seed=4, extra_md={"tokenizer.chat_template": TEMPLATE})
    return tribit.load(path, n_threads=1)


MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Mary went to the garden. Where is Mary?"},
]


def test_builtin_template_when_absent_or_placeholder(model, tmp_path):
    assert chat_template(model) is None
    placeholder = "{% for m in messages %}Human: {{ m.content }} BITNETAssistant: {% endfor %}"
    m2 = tribit.load(
        write_tiny(tmp_path / "p.gguf", seed=4, extra_md={"tokenizer.chat_template": placeholder})
    )
    assert chat_template(m2) is None
    assert render_messages(m2, MESSAGES) == render_messages(model, MESSAGES)
    text = render_messages(model, MESSAGES)
    assert "Where is Mary?" in text and "Answer briefly." in text


def test_file_template_and_single_bos(templated):
    assert chat_template(templated) == TEMPLATE
    text = render_messages(templated, MESSAGES)
    assert text.startswith("<|begin_of_text|>[system]Answer briefly.<|eot_id|>[user]")
    assert text.endswith("[assistant]")
    toks = chat_prompt_tokens(templated, MESSAGES)
    assert toks[0] == BOS and toks.count(BOS) == 1  # the template's BOS, not a second one
    assert toks.count(EOT) == 2  # special-token text parsed as the special token
    assert templated.detokenize(toks[1:]).startswith("[system]")


def test_normalize_messages_errors():
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert normalize_messages(parts) == [{"role": "user", "content": "ab"}]
    assert normalize_messages([{"role": "assistant", "content": None}])[0]["content"] == ""
    for bad, what in (
        ([], "empty"),
        ("hello", "list"),
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "content"),
        (["user: hi"], "object"),
    ):
        with pytest.raises(TribitError, match=what):
            normalize_messages(bad)


def _fresh_answer(model, messages, **kw):
    return generate(model, chat_prompt_tokens(model, messages), reuse_cache=False, **kw)


@pytest.mark.parametrize("which", ["model", "templated"])
def test_session_kv_reuse_equals_full_recompute(which, request):
    m = request.getfixturevalue(which)
    kw = dict(max_tokens=10, logits_processors=[ascii_only])
    session = ChatSession(m, system="You answer questions.", **kw)
    user_turns = ["Mary went to the garden. Where is Mary?", "And John?", "Thanks. Bye"]
    n_prev = 0
    for i, msg in enumerate(user_turns):
        chunks = list(session.stream(msg))
        answer = "".join(c.text for c in chunks)
        # the same conversation, computed from scratch
        assert answer == _fresh_answer(m, session.messages[:-1], **kw)
        assert session.messages[-1] == {"role": "assistant", "content": answer}
        if i:
            # everything up to the previous turn's prompt was reused, not recomputed
            assert chunks[-1].prompt_cached_tokens >= n_prev
        n_prev = chunks[-1].prompt_tokens
    assert len(session.messages) == 1 + 2 * len(user_turns)
    assert m.cached_tokens()[:n_prev] == chat_prompt_tokens(m, session.messages[:-1])[:n_prev]


def test_session_early_stop_keeps_partial_answer(model):
    session = ChatSession(model, max_tokens=20, logits_processors=[ascii_only])
    it = session.stream("Tell me a story.")
    got = next(it).text + next(it).text
    it.close()
    assert session.messages[-1] == {"role": "assistant", "content": got}
    session.reset("new system")
    assert session.messages == [{"role": "system", "content": "new system"}]


def test_session_interrupt_keeps_partial_answer_and_stays_usable(model):
    kw = dict(max_tokens=8, logits_processors=[ascii_only])
    session = ChatSession(model, system="S", **kw)
    turn = {"role": "user", "content": "Hi"}
    n_prompt = len(chat_prompt_tokens(model, [*session.messages, turn]))

    def ctrl_c_at_4(tokens, logits):
        if len(tokens) == n_prompt + 3:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a step
        return ascii_only(tokens, logits)

    got = []
    with pytest.raises(KeyboardInterrupt):
        for chunk in session.stream("Hi", logits_processors=[ctrl_c_at_4]):
            got.append(chunk.text)
    assert len(got) == 3
    assert session.messages[-1] == {"role": "assistant", "content": "".join(got)}
    answer = session.send("Go on")
    assert answer == _fresh_answer(model, session.messages[:-1], **kw)


def test_session_drops_old_turns_to_fit(tmp_path):
    m = tribit.load(write_tiny(tmp_path / "small.gguf", seed=4, ctx=96), n_threads=1)
    session = ChatSession(m, system="S", max_tokens=4, logits_processors=[ascii_only])
    for i in range(6):
        session.send(f"message number {i} with some padding text")
    assert session.messages[0] == {"role": "system", "content": "S"}
    assert len(session.messages) < 1 + 2 * 6  # old turns went
    assert session.messages[-2]["content"] == "message number 5 with some padding text"
    strict = ChatSession(m, system="S", max_tokens=4, drop_old_turns=False)
    with pytest.raises(ContextLengthError) as e:
        strict.send("x" * 200)
    assert e.value.n_ctx == 96 and e.value.n_prompt_tokens > 200
    assert strict.messages == [{"role": "system", "content": "S"}]  # failed turn not kept


def _check_head(d, obj):
    assert d["object"] == obj
    assert isinstance(d["id"], str) and d["id"]
    assert isinstance(d["created"], int) and d["created"] > 1_600_000_000
    assert d["model"] == "tiny"


def _check_usage(u, n_prompt, n_gen):
    assert u == {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_gen,
        "total_tokens": n_prompt + n_gen,
    }


def test_create_completion_shapes(model):
    prompt = "Sandra journeyed to the office."
    n_prompt = len(model.tokenize(prompt))
    r = create_completion(model, prompt, max_tokens=6, temperature=0, logit_bias={"65": 50.0})
    _check_head(r, "text_completion")
    assert set(r) == {"id", "object", "created", "model", "choices", "usage"}
    (choice,) = r["choices"]
    assert choice == {"text": "AAAAAA", "index": 0, "logprobs": None, "finish_reason": "length"}
    _check_usage(r["usage"], n_prompt, 6)
    chunks = list(
        create_completion(
            model,
            prompt,
            stream=True,
            max_tokens=6,
            temperature=0,
            logit_bias={65: 50.0},
            include_usage=True,
        )
    )
    for c in chunks[:-1]:
        _check_head(c, "text_completion")
        assert set(c["choices"][0]) == {"text", "index", "logprobs", "finish_reason"}
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "AAAAAA"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    _check_usage(chunks[-1]["usage"], n_prompt, 6)
    assert len({c["id"] for c in chunks}) == 1


def test_create_chat_completion_shapes(model):
    kw = dict(max_tokens=8, temperature=0, logit_bias={str(EOT): -1e9, str(EOS): -1e9})
    r = create_chat_completion(model, MESSAGES, **kw)
    _check_head(r, "chat.completion")
    (choice,) = r["choices"]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    _check_usage(r["usage"], len(chat_prompt_tokens(model, MESSAGES)), 8)
    chunks = list(create_chat_completion(model, MESSAGES, stream=True, **kw))
    for c in chunks:
        _check_head(c, "chat.completion.chunk")
        assert set(c["choices"][0]) == {"index", "delta", "logprobs", "finish_reason"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == choice["message"]["content"]


def test_chat_completion_stops_at_end_of_turn(model):
    n_prompt = len(chat_prompt_tokens(model, MESSAGES))

    def eot_after_3(tokens, logits):
        out = ascii_only(tokens, logits)
        out[[EOS, EOT]] = -np.inf
        if len(tokens) == n_prompt + 3:
            out[EOT] = 1e9
        return out

    r = create_chat_completion(model, MESSAGES, max_tokens=50, logits_processors=[eot_after_3])
    assert r["choices"][0]["finish_reason"] == "stop"
    content = r["choices"][0]["message"]["content"]
    assert 2 <= len(content) <= 3 and "\x00" not in content  # no end-of-turn text
    # 3 ASCII tokens; a leading blank is not part of a chat reply (tribit.protocol)
    _check_usage(r["usage"], n_prompt, 3)
    chunks = list(
        create_chat_completion(
            model, MESSAGES, stream=True, max_tokens=50, logits_processors=[eot_after_3]
        )
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_errors_before_streaming(model):
    long = [{"role": "user", "content": "y" * 400}]
    with pytest.raises(ContextLengthError):
        create_chat_completion(model, long, stream=True)
    with pytest.raises(TribitError, match="role"):
        create_chat_completion(model, [{"role": "robot", "content": "x"}], stream=True)
    with pytest.raises(TribitError, match="logit_bias"):
        create_completion(model, "x", logit_bias={"a": 1})
