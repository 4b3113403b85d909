"""The OpenAI-compatible server, as a real process on 127.0.0.1, with real clients."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server_process import launch, serving, stop_server, wait_health, wait_idle
from tiny_models import tiny_model

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

KEY = "test-key-123"
N_CTX = 128


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tiny_model(tmp_path_factory.mktemp("srv") / "m.gguf", n_vocab=300, ctx=512)
    args = [
        "--parallel",
        "4",
        "-c",
        str(N_CTX),
        "-t",
        "2",
        "--api-key",
        KEY,
        "--max-queue",
        "64",
        "--max-body",
        "65536",
    ]
    with serving(path, *args) as base:
        yield base


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    """One slot with a long context: a request can run for many seconds."""
    path = tiny_model(tmp_path_factory.mktemp("srv-long") / "m.gguf", n_vocab=300, ctx=8192)
    with serving(path, "--parallel", "1", "-c", "8192", "-t", "1", "--api-key", KEY) as base:
        yield base


def _h():
    return {"Authorization": f"Bearer {KEY}"}


def _post(base, route, body, **kw):
    return httpx.post(base + route, json=body, headers=_h(), timeout=60, **kw)


def test_health_is_public_and_api_key_enforced(server):
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    r = httpx.post(server + "/v1/completions", json={"prompt": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(
        server + "/v1/completions", json={"prompt": "hi"}, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401


def test_openai_client_completion_and_chat(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY)
    c = client.completions.create(model="m", prompt="Hello", max_tokens=8, temperature=0)
    assert c.object == "text_completion" and isinstance(c.choices[0].text, str)
    assert c.usage.completion_tokens <= 8 and c.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(
        model="m", max_tokens=6, temperature=0, messages=[{"role": "user", "content": "Hi"}]
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    # streaming with usage
    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model="m",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hi"}],
    )
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for choice in ch.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == chat.choices[0].message.content  # greedy: same answer
    assert finish == chat.choices[0].finish_reason and usage.completion_tokens >= 1


def test_stream_wire_format(server):
    with httpx.stream(
        "POST",
        server + "/v1/completions",
        headers=_h(),
        timeout=60,
        json={"prompt": "abc", "max_tokens": 4, "temperature": 0, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 10**12}, "max_tokens"),
        ({"prompt": "x", "temperature": -0.5}, "temperature"),
        ({"prompt": "x", "top_p": 2}, "top_p"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": [1, 2, 99999]}, "prompt"),
        ({"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
    ],
)
def test_bad_completion_fields(server, body, param):
    r = _post(server, "/v1/completions", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and param in (err["param"] or err["message"])


def test_bad_chat_fields(server):
    for msgs in ([{"role": "wizard", "content": "x"}], [], "hello", [{"content": "x"}]):
        r = _post(server, "/v1/chat/completions", {"messages": msgs})
        assert r.status_code == 400, (msgs, r.text)


def test_malformed_bodies(server):
    for raw in (b"{not json", b'{"prompt": "\xff\xfe"}', b""):
        r = httpx.post(
            server + "/v1/completions",
            content=raw,
            timeout=30,
            headers={**_h(), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, (raw, r.text)
        assert "error" in r.json()
    r = httpx.post(
        server + "/v1/completions",
        content=b"x" * 70000,
        timeout=30,
        headers={**_h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_chunked_body_over_the_limit_is_refused(server):
    """No Content-Length: the body is counted as it arrives."""

    def chunks():
        for _ in range(40):
            yield b" " * 4096  # 160 KiB of whitespace, over the server's 64 KiB limit

    r = httpx.post(
        server + "/v1/completions",
        content=chunks(),
        timeout=30,
        headers={**_h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    # a small chunked body still goes through the replay to the route
    r = httpx.post(
        server + "/v1/completions",
        content=iter([b'{"prompt": "hi", ', b'"max_tokens": 2}']),
        timeout=30,
        headers={**_h(), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_prompt_longer_than_context(server):
    r = _post(server, "/v1/completions", {"prompt": list(range(1, 200)), "max_tokens": 1})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "exceed_context_size_error"
    assert err["n_prompt_tokens"] == 199 and err["n_ctx"] == N_CTX


def test_models_tokenize_detokenize_metrics(server):
    m = httpx.get(server + "/v1/models", headers=_h()).json()
    assert m["object"] == "list" and m["data"][0]["meta"]["n_ctx"] == N_CTX
    toks = _post(server, "/tokenize", {"content": "hello"}).json()["tokens"]
    assert toks and _post(server, "/detokenize", {"tokens": toks}).json()["content"] == "hello"
    assert _post(server, "/detokenize", {"tokens": [10**6]}).status_code == 400
    text = httpx.get(server + "/metrics", headers=_h()).text
    for name in (
        "requests_total",
        "prompt_tokens_total",
        "tokens_predicted_total",
        "predicted_tokens_seconds",
        "requests_deferred",
        "requests_processing",
    ):
        assert f"tribit_{name} " in text


def test_disconnect_frees_the_slot(server):
    with httpx.stream(
        "POST",
        server + "/v1/completions",
        headers=_h(),
        timeout=60,
        json={"prompt": "abc", "max_tokens": 100000, "temperature": 1.0, "stream": True, "seed": 1},
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # leave mid-stream
    assert wait_idle(server, _h(), timeout=20) == 0
    r = _post(server, "/v1/completions", {"prompt": "still there?", "max_tokens": 2})
    assert r.status_code == 200


def test_disconnect_frees_the_slot_without_streaming(long_server):
    # eos and eot (257, 258) banned: the answer runs until max_tokens
    ban = {"257": -100, "258": -100}
    body = {"prompt": "abc", "max_tokens": 6000, "seed": 2, "logit_bias": ban}
    t0 = time.time()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(long_server + "/v1/completions", json=body, headers=_h(), timeout=1.0)
    wait_idle(long_server, _h(), timeout=30 - (time.time() - t0), poll=0.05)
    freed = time.time() - t0
    # the same request, kept: how long the slot would have stayed busy
    t1 = time.time()
    r = httpx.post(long_server + "/v1/completions", json=body, headers=_h(), timeout=300)
    full = time.time() - t1
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 6000
    assert freed < min(3.0, full / 2), (freed, full)


def test_concurrent_clients_get_their_own_answers(server):
    prompts = [f"prompt number {i} says" for i in range(8)]

    def ask(p):
        r = _post(server, "/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    alone = {p: ask(p) for p in prompts}
    with ThreadPoolExecutor(32) as ex:
        got = list(ex.map(ask, prompts * 4))
    for p, text in zip(prompts * 4, got, strict=True):
        assert text == alone[p], p


def test_a_model_that_fails_to_load_is_reported_on_health_and_console(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))  # a header and nothing else
    proc, base = launch(bad)
    try:
        r = wait_health(proc, base, lambda r: r.status_code != 503, timeout=60)
        assert r is not None and r.status_code == 500, r
        assert r.json()["status"] == "error" and r.json()["error"]
    finally:
        out = stop_server(proc)
    assert "the model failed to load" in out, out[-2000:]


# -- coalesced streams (--stream-interval) ------------------------------------------------
def _stream_summary(base, route, body, headers=None):
    """(text, finish_reason, usage, number of text events) of one streamed request."""
    chat = "chat" in route
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base + route, json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        data = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text, finish, usage, n = "", None, None, 0
    for c in map(json.loads, data[:-1]):
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            piece = (ch["delta"].get("content") or "") if chat else ch["text"]
            text, n = text + piece, n + bool(piece)
            finish = ch["finish_reason"] or finish
    return text, finish, usage, n


def test_a_coalesced_stream_has_the_same_text(server, tmp_path):
    path = tiny_model(tmp_path / "m.gguf", n_vocab=300, ctx=512)
    cases = [
        ("/v1/completions", {"prompt": "The cat", "max_tokens": 100, "temperature": 0}),
        (
            "/v1/completions",
            {"prompt": "abc", "max_tokens": 60, "temperature": 0.9, "seed": 4, "stop": ["q", "zz"]},
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 80,
                "temperature": 1.0,
                "seed": 2,
            },
        ),
    ]
    with serving(
        path, "--parallel", "2", "-c", str(N_CTX), "-t", "1", "--stream-interval", "50"
    ) as coalesced:
        for route, body in cases:
            one = _stream_summary(server, route, body, _h())
            merged = _stream_summary(coalesced, route, body)
            assert merged[:3] == one[:3], (route, body)
            assert merged[3] <= one[3]
        # a fast stream of many tokens goes out in far fewer events
        one = _stream_summary(server, *cases[0], _h())
        merged = _stream_summary(coalesced, *cases[0])
        assert one[3] > 50 and merged[3] < one[3] / 2


def test_coalescing_sends_the_text_before_an_error():
    import asyncio

    from tribit.generation import GenerationChunk
    from tribit.protocol import Responder
    from tribit.server.engine import Job
    from tribit.server.streaming import stream_answer

    async def run(interval):
        queue = asyncio.Queue()
        for t in "abc":
            queue.put_nowait(GenerationChunk(t, 1))
        err = GenerationChunk("", -1, "error")
        err.error = RuntimeError("boom")
        queue.put_nowait(err)
        job = Job([1], {}, emit=None)
        resp = stream_answer(job, queue, Responder(chat=False, model="m"), False, interval)
        out = [x async for x in resp.body_iterator]
        assert job.cancelled.is_set()
        return out

    plain, merged = asyncio.run(run(0.0)), asyncio.run(run(0.05))

    def texts(out):
        return [json.loads(x[6:])["choices"][0]["text"] for x in out if '"choices"' in x]

    assert texts(plain) == ["a", "b", "c"] and texts(merged) == ["abc"]
    assert "boom" in plain[-2] and plain[-2:] == merged[-2:] and merged[-1] == "data: [DONE]\n\n"
