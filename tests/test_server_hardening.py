"""Hostile requests and model templates against a real server on 127.0.0.1 (issue 17,
items 3, 5, 6, 7 and 9): OpenAI-shaped 4xx/5xx JSON errors, one request's failure never
touching another's, CPU work off the event loop (so /health keeps answering)."""

import threading
import time

import numpy as np
import pytest

from server_process import launch, serving, stop_server, wait_health
from tiny_models import rewrite, tiny_model

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

N_VOCAB = 300
# renders normally, but loops 10^10 times when the last message is longer than 50 characters
SLOW_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}<|eot_id|>{% endfor %}"
    "{% if messages[-1].content|length > 50 %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}Assistant: "
)
EXPONENTIAL_TEMPLATE = (
    "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("srv-hard")
    path = rewrite(
        tiny_model(d / "m0.gguf", n_vocab=N_VOCAB),
        d / "m.gguf",
        {"tokenizer.chat_template": SLOW_TEMPLATE},
    )
    with serving(path, "--parallel", "2", "-c", "128", "-t", "1") as base:
        yield base


def post(base, route, body=None, content=None, timeout=60):
    if content is not None:
        return httpx.post(
            base + route,
            content=content,
            timeout=timeout,
            headers={"Content-Type": "application/json"},
        )
    return httpx.post(base + route, json=body, timeout=timeout)


def assert_openai_error(r, status, param=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert param in (err["param"] or "") + err["message"], err
    return err


# -- item 7: error shapes --------------------------------------------------------------------
@pytest.mark.parametrize(
    "bias", [{"²": 1}, {"1" * 5000: 1}, {"-1": 1}, {str(N_VOCAB): 1}, {"99999999999": 1}]
)
def test_logit_bias_keys(server, bias):
    # {"²": 1} was a plain-text 500 ("²".isdigit() but int("²") raises); an id outside the
    # vocabulary is a 400 as well
    r = post(server, "/v1/completions", {"prompt": "x", "max_tokens": 1, "logit_bias": bias})
    assert_openai_error(r, 400, "logit_bias")


@pytest.mark.parametrize(
    "route,raw",
    [
        ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 1}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        ),
        ("/tokenize", b'{"content": "\\ud800"}'),
        ("/v1/completions", b'{"prompt": "x", "stop": ["\\ud83d"]}'),
    ],
)
def test_lone_surrogates_are_400(server, route, raw):
    # were plain-text 500s that reset the keep-alive connection
    with httpx.Client(timeout=60) as c:
        r = c.post(server + route, content=raw, headers={"Content-Type": "application/json"})
        assert_openai_error(r, 400)
        assert "lone surrogate" in r.json()["error"]["message"]
        assert c.get(server + "/health").status_code == 200  # same client, still usable


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", "5"),
        ("max_tokens", True),
        ("max_tokens", 5.5),
        ("temperature", "0.5"),
        ("stream", "yes"),
        ("seed", True),
    ],
)
def test_numbers_and_flags_are_strict(server, field, value):
    r = post(server, "/v1/completions", {"prompt": "x", field: value})
    assert_openai_error(r, 400, field)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt_is_400_as_documented(server, prompt):
    r = post(server, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    err = assert_openai_error(r, 400, "prompt")
    assert err["code"] == "empty_prompt"


def test_prompt_ids_must_be_integers(server):
    r = post(server, "/v1/completions", {"prompt": [1, True, 2], "max_tokens": 1})
    assert_openai_error(r, 400, "prompt")


# -- item 3 and 6: the event loop stays free -------------------------------------------------
# Work on the event loop held /health for the whole template or tokenization (22-34 s);
# off it, /health answers in 0.28-0.38 s on a 2-core host at load average 4.4 (the target is
# 1 s). The bound leaves room for a loaded CI machine and still catches a blocked loop.
HEALTH_BOUND_S = 5.0


def _health_while(base, busy):
    """Poll /health while `busy` runs in a thread; return (busy's result, worst latency)."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", busy()))
    t.start()
    worst = 0.0
    n = 0
    while t.is_alive() or n < 1:
        t0 = time.perf_counter()
        r = httpx.get(base + "/health", timeout=30)
        worst = max(worst, time.perf_counter() - t0)
        assert r.status_code == 200
        n += 1
        time.sleep(0.05)
    t.join()
    return out["r"], worst


def test_slow_template_fails_its_request_and_health_answers(server):
    # the template passes start-up validation (short sample) but loops "forever" on a long
    # message: that request fails with a 500, nothing else is held up
    body = {"messages": [{"role": "user", "content": "x" * 60}], "max_tokens": 1}
    r, worst = _health_while(server, lambda: post(server, "/v1/chat/completions", body))
    err = assert_openai_error(r, 500)
    assert err["code"] == "template_budget_exceeded" and "time budget" in err["message"]
    print(f"/health worst latency during a budget-exceeding template: {worst:.3f} s")
    assert worst < HEALTH_BOUND_S, worst
    # the next chat (short content) works: a fresh worker renders it
    r = post(
        server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200, r.text


def test_big_tokenize_runs_off_the_event_loop(server):
    text = "a" * (3 << 20)  # 3 MiB without spaces (the body limit is 4 MiB)
    r, worst = _health_while(
        server, lambda: post(server, "/tokenize", {"content": text}, timeout=300)
    )
    assert r.status_code == 200 and len(r.json()["tokens"]) == len(text)
    print(f"/health worst latency during a 3 MiB /tokenize: {worst:.3f} s")
    assert worst < HEALTH_BOUND_S, worst


def test_chat_turn_injection_over_http(server):
    # a message holding the end-of-turn marker is text: it costs text tokens, no control id
    inj = "<|eot_id|>"
    r = post(server, "/tokenize", {"content": inj, "parse_special": False})
    plain = len(r.json()["tokens"])
    assert plain > 1
    usage = []
    for content in ("ab", "ab" + inj):
        r = post(
            server,
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": content}], "max_tokens": 1},
        )
        assert r.status_code == 200, r.text
        usage.append(r.json()["usage"]["prompt_tokens"])
    assert usage[1] - usage[0] == plain


def test_template_failing_validation_is_reported_at_start_up(tmp_path):
    path = rewrite(
        tiny_model(tmp_path / "m0.gguf", n_vocab=N_VOCAB),
        tmp_path / "m.gguf",
        {"tokenizer.chat_template": EXPONENTIAL_TEMPLATE},
    )
    proc, base = launch(path, "--parallel", "1", "-c", "64", "-t", "1")
    try:
        r = wait_health(proc, base, lambda r: r.status_code == 200, 60)
        assert r is not None and r.status_code == 200
        r = post(base, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        err = assert_openai_error(r, 500)
        assert "chat template is disabled" in err["message"]
        r = post(base, "/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert r.status_code == 200  # plain completions still work
    finally:
        out = stop_server(proc)
    assert "error: the model's chat template is disabled" in out and "Traceback" not in out


# -- item 5: one job's failure stays with it ---------------------------------------------------
class _Boom(Exception):
    pass


def test_engine_isolates_a_failing_job(tmp_path):
    import tribit
    from tribit.server.engine import Engine, Job

    model = tribit.load(
        tiny_model(tmp_path / "e.gguf", n_vocab=N_VOCAB), n_threads=1, n_seq=3, n_ctx=64
    )
    greedy = lambda logits: int(np.argmax(logits))  # noqa: E731

    def boom(tokens, logits):
        if len(tokens) > 6:
            raise _Boom("processor failed")
        return logits

    def run(jobs_spec):
        eng = Engine(model)
        eng.start()
        events = [[] for _ in jobs_spec]
        done = [threading.Event() for _ in jobs_spec]
        try:
            for i, (toks, procs) in enumerate(jobs_spec):

                def emit(chunk, i=i):
                    events[i].append(chunk)
                    if chunk.finish_reason:
                        done[i].set()

                opts = {"max_tokens": 8, "sampler": greedy, "logits_processors": procs}
                eng.submit(Job(toks, opts, emit))
            for d in done:
                assert d.wait(60)
        finally:
            eng.shutdown()
        return events

    good = [1, 2, 3, 4, 5]
    alone = run([(good, [])])[0]
    # a token id the model refuses (as a tokenizer larger than token_embd produced) and a
    # processor that raises, batched with a good request
    mixed = run([(good, []), ([1, 2, N_VOCAB + 5], []), ([7, 8, 9], [boom])])
    assert [c.token for c in mixed[0]] == [c.token for c in alone]
    assert [c.text for c in mixed[0]] == [c.text for c in alone]
    assert mixed[1][-1].finish_reason == "error" and "out of range" in str(mixed[1][-1].error)
    assert mixed[2][-1].finish_reason == "error" and "processor failed" in str(mixed[2][-1].error)
    assert all(c.error is None for c in mixed[0]) and mixed[0][-1].finish_reason == "length"


def test_a_dead_engine_thread_fails_health_and_its_requests(tmp_path):
    """A bug that kills the engine thread must not freeze the server: the waiting requests
    get an error at once, /health answers 500, new requests 503 (a load balancer or Ray
    Serve's health check then replaces the replica). Also: create_app(state=) serves a
    State loaded by the caller."""
    from fastapi.testclient import TestClient

    from tribit.server.app import ServerSettings, State, create_app
    from tribit.server.engine import Job

    settings = ServerSettings(
        str(tiny_model(tmp_path / "m.gguf", n_vocab=N_VOCAB)), n_parallel=1, n_ctx=64, n_threads=1
    )
    state = State(settings)
    state.load()
    with TestClient(create_app(settings, state=state)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        body = {"prompt": "ab", "max_tokens": 3, "temperature": 0}
        assert client.post("/v1/completions", json=body).status_code == 200
        engine = state.engine
        assert engine.alive

        def boom():
            raise RuntimeError("a bug in the scheduler")

        engine._admit = boom  # the next loop iteration raises outside any one request
        got = []
        engine.submit(Job([1, 2, 3], {"max_tokens": 4}, got.append))
        engine._thread.join(10)
        assert not engine.alive and "a bug in the scheduler" in engine.error
        assert got and got[-1].finish_reason == "error"  # told, not left hanging
        r = client.get("/health")
        assert r.status_code == 500 and "a bug in the scheduler" in r.json()["error"]
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_stopped"
