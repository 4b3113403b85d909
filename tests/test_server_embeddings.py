"""/v1/embeddings on a real server process: the official `openai` client, batched and
concurrent requests equal to the library's vectors alone, encodings, dimensions, usage,
limits and errors, and the refusals between embedding and generative models."""

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tribit
from server_process import serving
from tiny_models import qwen3_model

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

KEY = "emb-key"
MD = {"qwen3.pooling_type": np.uint32(3), "tokenizer.ggml.add_eos_token": True}
TEXTS = [f"sentence {i}: " + "ternary " * (i % 5) + "embeddings" for i in range(16)]


@pytest.fixture(scope="module")
def emb_path(tmp_path_factory):
    return qwen3_model(
        tmp_path_factory.mktemp("es") / "e.gguf",
        "i2_s",
        head_dim=128,
        norm_in=True,
        extra_md=MD,
        ctx=512,
    )


@pytest.fixture(scope="module")
def server(emb_path):
    with serving(emb_path, "--parallel", "4", "-c", "64", "-t", "2", "--api-key", KEY) as base:
        yield base


@pytest.fixture(scope="module")
def alone(emb_path):
    m = tribit.load(emb_path, n_ctx=64, n_threads=2)
    return np.stack([m.embed(t)[0] for t in TEXTS])


def _post(base, body):
    return httpx.post(
        base + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    )


def test_openai_client_single_and_batched(server, alone):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY)
    one = client.embeddings.create(model="e", input=TEXTS[0])
    assert len(one.data) == 1 and one.data[0].index == 0
    np.testing.assert_array_equal(np.array(one.data[0].embedding, np.float32), alone[0])
    many = client.embeddings.create(model="e", input=TEXTS)  # the client asks for base64
    got = np.array([d.embedding for d in many.data], np.float32)
    np.testing.assert_array_equal(got, alone)
    assert many.usage.prompt_tokens == many.usage.total_tokens > 16


def test_sixteen_concurrent_requests_equal_alone(server, alone):
    with ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(lambda t: _post(server, {"input": t}), TEXTS))
    got = np.array([r.json()["data"][0]["embedding"] for r in rs], np.float32)
    np.testing.assert_array_equal(got, alone)


def test_formats_dimensions_and_token_input(server, alone, emb_path):
    r = _post(server, {"input": TEXTS[:2], "encoding_format": "base64"}).json()
    v = np.frombuffer(base64.b64decode(r["data"][1]["embedding"]), "<f4")
    np.testing.assert_array_equal(v, alone[1])
    r = _post(server, {"input": TEXTS[3], "dimensions": 32}).json()
    v = np.array(r["data"][0]["embedding"])
    assert v.shape == (32,) and abs(np.linalg.norm(v) - 1) < 1e-6
    np.testing.assert_allclose(v, alone[3][:32] / np.linalg.norm(alone[3][:32]), atol=1e-6)
    m = tribit.load(emb_path, n_ctx=64)
    ids = m.tokenizer.encode(TEXTS[2], add_bos=None, special=True, add_eos=True)
    for body, n in (({"input": ids}, 1), ({"input": [ids, ids]}, 2)):
        r = _post(server, body).json()
        assert len(r["data"]) == n and r["usage"]["prompt_tokens"] == n * len(ids)
        np.testing.assert_array_equal(np.array(r["data"][-1]["embedding"], np.float32), alone[2])


def test_errors_and_refusals(server):
    cases = [
        ({"input": ""}, "empty_input"),
        ({"input": []}, "empty_input"),
        ({"input": "word " * 100}, "exceed_context_size_error"),
        ({"input": [1, 99999]}, "invalid_token"),
        ({"input": "x", "dimensions": 4096}, "invalid_dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "invalid_request"),
        ({"input": ["x"] * 3000}, "invalid_request"),
    ]
    for body, code in cases:
        r = _post(server, body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    h = {"Authorization": f"Bearer {KEY}"}
    for route, body in (
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        r = httpx.post(server + route, json=body, headers=h, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_generative"


def test_generative_model_refuses_unless_pooling(tmp_path):
    path = qwen3_model(tmp_path / "g.gguf", "i2_s", ctx=512)
    with serving(path, "--parallel", "2", "-c", "64", "-t", "1") as base:
        r = httpx.post(base + "/v1/embeddings", json={"input": "x"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_embedding"
        r = httpx.post(base + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert r.status_code == 200
    with serving(path, "--parallel", "2", "-c", "64", "-t", "1", "--pooling", "mean") as base:
        r = httpx.post(base + "/v1/embeddings", json={"input": "x"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 256
