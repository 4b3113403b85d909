"""Ray Serve replicas and Ray Data jobs (tribit.integrations, docs/SCALING.md).

A local Ray cluster on this machine (2 CPUs booked, no dashboard, usage stats off), Serve's
proxy on 127.0.0.1, 2 replicas of a tiny model: their answers equal `tribit serve`'s, a
client that disconnects frees its slot, a killed replica is replaced while the other keeps
answering, stopping the app lets open streams finish; a Ray Data job over 100 prompts gives
the single-process completions, one over 40 texts the single-process embeddings. Needs
`pip install "tribit[ray]"`; without Ray these tests skip and say so. Every Ray process
started here is stopped at the end of the module.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip(
    "ray",
    reason='Ray is not installed (pip install "tribit[ray]"): '
    "the Ray Serve and Ray Data tests skip",
)
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed")

import tribit  # noqa: E402
from server_process import free_port, serving  # noqa: E402
from tiny_models import qwen3_model, tiny_model  # noqa: E402
from tribit.formats.keys import embed_prompt_key  # noqa: E402
from tribit.integrations.ray_serve import (  # noqa: E402
    REPLICA_HEADER,
    ServeArgs,
    build_app,
    check_engine,
    deployment_options,
)

pytestmark = pytest.mark.ray

BOS, EOS, EOT = 256, 257, 258
CTX = 4096  # per slot: long enough that a whole answer takes a while
SLOTS = 4
APP = "tribit"
NO_EOG = {str(EOS): -100, str(EOT): -100}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ray") / "m.gguf", n_vocab=300, ctx=CTX)


@pytest.fixture(scope="module")
def emb_path(tmp_path_factory):
    """A tiny BitNet-embedding-shaped model (qwen3, input norms, last pooling, EOS)."""
    md = {"qwen3.pooling_type": np.uint32(3), "tokenizer.ggml.add_eos_token": True}
    md[embed_prompt_key("query")] = "query: "
    return qwen3_model(
        tmp_path_factory.mktemp("e") / "e.gguf", "i2_s", head_dim=128, norm_in=True, extra_md=md
    )


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def served(cluster, path):
    """Base URL of 2 replicas (1 thread, 4 slots each) behind Serve's proxy on 127.0.0.1."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            model=str(path),
            slots=SLOTS,
            threads=1,
            ctx=CTX,
            replicas=2,
            replicas_per_node=None,
            health_check_period_s=1.0,
            graceful_shutdown_s=30.0,
        ),
        name=APP,
        route_prefix="/",
    )
    return f"http://127.0.0.1:{port}"


# -- no cluster needed -----------------------------------------------------------------
def test_sizing_defaults():
    opts = deployment_options(ServeArgs(slots=8, threads=6))
    assert opts["ray_actor_options"] == {"num_cpus": 6}
    assert opts["max_ongoing_requests"] == 8 and opts["max_queued_requests"] == 64
    assert opts["max_replicas_per_node"] == 1 and opts["num_replicas"] == 1
    auto = deployment_options(ServeArgs(slots=8, threads=2, min_replicas=1, max_replicas=4))
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 6.0,
    }
    assert "num_replicas" not in auto
    settings = ServeArgs(slots=3, threads=2, api_key="k", alias="a").settings()
    assert (settings.n_parallel, settings.n_threads, settings.api_key) == (3, 2, "k")
    with pytest.raises(Exception, match="max_replicas"):
        deployment_options(ServeArgs(min_replicas=3, max_replicas=2))


def test_health_check_fails_when_the_engine_dies(path):
    from tribit.server.app import ServerSettings, State

    state = State(ServerSettings(str(path), n_parallel=1, n_ctx=64, n_threads=1))
    with pytest.raises(RuntimeError, match="not loaded"):
        check_engine(state)
    state.load()
    check_engine(state)
    state.engine.shutdown()  # a dead thread reads the same (test_server_hardening.py)
    with pytest.raises(RuntimeError, match="engine thread is not running"):
        check_engine(state)


# -- Ray Serve ---------------------------------------------------------------------------
def _requests():
    """8 requests: completions and chat, greedy and seeded sampling, plain and streamed."""
    out = []
    for i in range(8):
        if i % 2:
            body = {"messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": 12}
            route = "/v1/chat/completions"
        else:
            body = {"prompt": f"Story {i}: once", "max_tokens": 12}
            route = "/v1/completions"
        body["temperature"] = 0.0 if i % 4 < 2 else 0.9
        body["seed"] = i
        body["stream"] = i >= 4
        body["stream_options"] = {"include_usage": True}
        out.append((route, body))
    return out


def _ask(base: str, route: str, body: dict) -> tuple:
    """(text, finish_reason, usage, replica) of one request, streamed or not."""
    chat = "chat" in route
    if not body["stream"]:
        r = httpx.post(base + route, json=body, timeout=120)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        return text, choice["finish_reason"], r.json()["usage"], r.headers.get(REPLICA_HEADER)
    text, finish, usage = "", None, None
    with httpx.stream("POST", base + route, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        lines = [x[6:] for x in r.iter_lines() if x.startswith("data: ")]
        replica = r.headers.get(REPLICA_HEADER)
    assert lines[-1] == "[DONE]"
    for c in map(json.loads, lines[:-1]):
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            text += (ch["delta"].get("content") or "") if chat else ch["text"]
            finish = ch["finish_reason"] or finish
    return text, finish, usage, replica


def _ask_all(base: str) -> list[tuple]:
    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda rb: _ask(base, *rb), _requests()))


def test_answers_equal_tribit_serve(path, served):
    with serving(path, "--parallel", str(SLOTS), "-c", str(CTX), "-t", "1") as direct:
        alone = [a[:3] for a in _ask_all(direct)]
    through = _ask_all(served)
    assert [a[:3] for a in through] == alone
    assert len({a[0] for a in alone}) > 2  # the answers differ: the comparison means something
    assert all(a[3] for a in through)  # every answer names its replica


def _metrics(base: str) -> tuple[str, dict[str, float]]:
    r = httpx.get(base + "/metrics", timeout=30)
    rows = dict(x.split() for x in r.text.splitlines() if x.startswith("tribit_"))
    return r.headers[REPLICA_HEADER], {k[7:]: float(v) for k, v in rows.items()}


def _metrics_of(base: str, replica: str, timeout: float = 60) -> dict[str, float]:
    """The metrics of one replica (requests go to a random replica: ask until it answers)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        who, m = _metrics(base)
        if who == replica:
            return m
    pytest.fail(f"replica {replica} never answered /metrics")


def _long_stream(base: str, max_tokens: int = CTX - 16):
    body = {
        "prompt": [BOS, 5, 6, 7],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logit_bias": NO_EOG,
        "stream": True,
    }
    return httpx.stream("POST", base + "/v1/completions", json=body, timeout=120)


def test_a_disconnect_frees_its_slot(served):
    max_tokens = CTX - 16
    with _long_stream(served, max_tokens) as r:
        replica = r.headers[REPLICA_HEADER]
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # the client has gone: Serve cancels the replica's request, the app's stream ends in its
    # `finally`, the engine drops the sequence and frees the slot
    deadline = time.time() + 60
    while (m := _metrics_of(served, replica))["requests_processing"] > 0:
        assert time.time() < deadline, "the slot was not freed"
        time.sleep(0.2)
    # cut short, not run to its end: far fewer tokens than asked for were generated
    assert m["tokens_predicted_total"] < max_tokens


def _replica_actor(replica: str):
    from ray.util import list_named_actors

    for a in list_named_actors(all_namespaces=True):
        if a["name"].startswith("SERVE_REPLICA::") and a["name"].endswith("#" + replica):
            return ray.get_actor(a["name"], namespace=a["namespace"])
    raise AssertionError(f"no actor for replica {replica}")


def test_a_killed_replica_is_replaced_while_the_other_answers(served):
    expected = _ask(served, *_requests()[0])[:3]
    with _long_stream(served) as r:
        victim = r.headers[REPLICA_HEADER]
        lines = r.iter_lines()
        next(lines)
        ray.kill(_replica_actor(victim), no_restart=True)
        # the client of the request that was running there gets an error, not a hang
        rest, broken = [], None
        try:
            rest.extend(lines)
        except httpx.HTTPError as e:
            broken = e
        assert broken is not None and "data: [DONE]" not in rest
    # the other replica keeps answering: no request that had not started is lost
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda _: _ask(served, *_requests()[0]), range(8)))
    assert all(a[:3] == expected for a in answers)
    assert all(a[3] != victim for a in answers)
    # Serve starts a replacement: a third replica id answers, with the same answer
    deadline, seen = time.time() + 180, set()
    while time.time() < deadline:
        a = _ask(served, *_requests()[0])
        assert a[:3] == expected
        seen.add(a[3])
        if len(seen - {victim}) >= 2:
            break
        time.sleep(0.2)
    assert len(seen - {victim}) >= 2, f"no replacement replica answered: {seen}"


def test_stopping_lets_open_streams_finish(served):
    """Deleting the app drains the replicas: a stream still being generated when the
    deletion began ends with all its tokens and [DONE]."""
    max_tokens = CTX - 16
    t0 = time.perf_counter()
    with _long_stream(served, max_tokens) as r:
        lines = r.iter_lines()
        first = [next(lines) for _ in range(2)]
        serve.delete(APP, _blocking=False)
        while serve.status().applications[APP].status != "DELETING":
            time.sleep(0.02)
        t_deleting = time.perf_counter() - t0
        lines = first + list(lines)
    data = [x[6:] for x in lines if x.startswith("data: ")]
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    timings = last["timings"]
    assert timings["predicted_n"] == max_tokens
    # the answer was still being generated when the deletion began
    busy_s = (timings["queue_ms"] + timings["prompt_ms"] + timings["predicted_ms"]) / 1000
    assert t_deleting < busy_s, (t_deleting, busy_s)
    deadline = time.time() + 120
    while APP in serve.status().applications:
        assert time.time() < deadline, "the app was not deleted"
        time.sleep(0.2)


# -- Ray Data ----------------------------------------------------------------------------
def test_ray_data_job_equals_single_process(cluster, path):
    from tribit.integrations.ray_data import Completer

    serve.shutdown()  # the replicas' CPUs go back to the cluster
    prompts = [f"Item {i}: the answer is" for i in range(100)]
    kw = {"max_tokens": 10, "temperature": 0.9, "seed": 3}
    ds = ray.data.from_items([{"prompt": p, "n": i} for i, p in enumerate(prompts)])
    ds = ds.map_batches(
        Completer,
        fn_constructor_kwargs={"model": str(path), "threads": 1, "slots": 8, "ctx": 128, **kw},
        concurrency=2,
        num_cpus=1,
        batch_size=16,
    )
    rows = sorted(ds.take_all(), key=lambda r: r["n"])
    got = [r["completion"] for r in rows]
    model = tribit.load(str(path), n_threads=1, n_ctx=128)
    assert got == [tribit.generate(model, p, **kw) for p in prompts]
    assert len(set(got)) > 10


def test_completer_batches_and_is_greedy_by_default(path):
    """No cluster: one call decodes its prompts together, greedy, as tribit.generate."""
    from tribit.integrations.ray_data import Completer

    c = Completer(str(path), threads=1, slots=8, ctx=128, max_tokens=12)
    calls = []
    forward = c.model.forward
    c.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    prompts = [f"Prompt {i}" for i in range(16)]
    out = c({"prompt": np.array(prompts, dtype=object), "id": np.arange(16)})
    assert list(out["id"]) == list(range(16))
    model = tribit.load(str(path), n_threads=1, n_ctx=128)
    assert list(out["completion"]) == [tribit.generate(model, p, max_tokens=12) for p in prompts]
    assert len(calls) <= 2 * 13  # two waves of 8 sequences, not 16 x 12 forwards


def test_ray_data_embeddings_equal_single_process(cluster, emb_path):
    from tribit.integrations.ray_data import Embedder

    serve.shutdown()  # the replicas' CPUs go back to the cluster
    texts = [f"passage {i}: " + "ternary weights " * (i % 7) for i in range(40)]
    ds = ray.data.from_items([{"text": t, "n": i} for i, t in enumerate(texts)])
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": str(emb_path), "threads": 1, "slots": 4, "ctx": 128},
        concurrency=2,
        num_cpus=1,
        batch_size=8,
    )
    rows = sorted(ds.take_all(), key=lambda r: r["n"])
    got = np.stack([r["embedding"] for r in rows])
    model = tribit.load(str(emb_path), n_threads=1, n_ctx=128)
    want = np.concatenate([model.embed(t) for t in texts])
    assert got.shape == (40, 256) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # batching does not change a vector


def test_embedder_batches_through_the_slots(emb_path, path):
    """No cluster: one call embeds its texts together; each vector is the text's alone."""
    from tribit.errors import TribitError
    from tribit.integrations.ray_data import Completer, Embedder

    e = Embedder(str(emb_path), threads=1, slots=4, ctx=128)
    calls = []
    forward = e.model.forward
    e.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    texts = [f"text number {i}" for i in range(8)]
    out = e({"text": np.array(texts, dtype=object), "id": np.arange(8)})
    assert list(out["id"]) == list(range(8)) and out["embedding"].shape == (8, 256)
    assert len(calls) == 2  # two waves of 4 slots, not 8 forwards
    model = tribit.load(str(emb_path), n_threads=1, n_ctx=128)
    alone = np.concatenate([model.embed(t) for t in texts])
    np.testing.assert_array_equal(out["embedding"], alone)
    # token ids as given; the file's prompt and a prefix before every string
    ids = [model.tokenizer.encode("abc", add_eos=True), [5, 6, 7]]
    np.testing.assert_array_equal(e({"text": ids})["embedding"], model.embed(ids))
    q = Embedder(str(emb_path), threads=1, prompt_name="query", prefix="> ", output_column="v")
    np.testing.assert_array_equal(q({"text": ["hello"]})["v"], model.embed("query: > hello"))
    # Completer(task="embed") is the same, over the prompt column
    c = Completer(str(emb_path), threads=1, slots=4, ctx=128, task="embed")
    np.testing.assert_array_equal(c({"prompt": texts})["embedding"], alone)
    with pytest.raises(ValueError, match="task='complete'"):
        Completer(str(emb_path), task="embed", chat=True)
    with pytest.raises(ValueError, match="pooling='none'"):
        Embedder(str(emb_path), pooling="none")
    with pytest.raises(TribitError, match="no prompt 'doc'"):
        Embedder(str(emb_path), prompt_name="doc")
    with pytest.raises(TribitError, match="defines no pooling"):
        Embedder(str(path))  # a generative model: pooling must be given
    assert Embedder(str(path), pooling="mean", threads=1)({"text": ["x"]})["embedding"].shape == (
        1,
        256,
    )
