"""`Model.embed` and the `EmbeddingBatch` under it: pooling, normalisation, EOS, batching
through the slots and chunking through the token budget give the vectors of one text alone."""

import numpy as np
import pytest

import tribit
from tiny_models import qwen3_model
from tribit.errors import ContextLengthError, ModelError, TribitError
from tribit.model import reference

MD = {"qwen3.pooling_type": np.uint32(3), "tokenizer.ggml.add_eos_token": True}


@pytest.fixture(scope="module")
def emb_path(tmp_path_factory):
    return qwen3_model(
        tmp_path_factory.mktemp("e") / "e.gguf", "i2_s", head_dim=128, norm_in=True, extra_md=MD
    )


def test_embed_last_pooling_matches_the_oracle(emb_path):
    m = tribit.load(emb_path, kv_type="f32", n_seq=2)
    texts = ["hello world", "a longer text about ternary embeddings", "x"]
    got = m.embed(texts)
    assert got.shape == (3, 256) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    ref = reference.load_reference(emb_path)
    for text, v in zip(texts, got, strict=True):
        toks = m.tokenize(text, add_bos=None)
        assert m.tokenizer.add_eos
        want = reference.forward(ref, toks + [m.tokenizer.eos_id], hidden=True)[-1]
        assert np.dot(v, want / np.linalg.norm(want)) > 0.9999


def test_batched_and_chunked_equal_alone(emb_path):
    texts = [f"text number {i} " * (i + 1) for i in range(7)]
    alone = tribit.load(emb_path, n_seq=1)
    one = np.stack([alone.embed(t)[0] for t in texts])
    many = tribit.load(emb_path, n_seq=4)
    np.testing.assert_array_equal(many.embed(texts), one)
    np.testing.assert_array_equal(many.embed(texts, batch_tokens=7), one)  # chunked prompts


@pytest.mark.parametrize("pooling", ["mean", "cls", "none"])
def test_other_poolings(emb_path, pooling):
    m = tribit.load(emb_path, kv_type="f32", n_seq=2)
    ref = reference.load_reference(emb_path)
    text = "pool me please"
    toks = m.tokenize(text, add_bos=None) + [m.tokenizer.eos_id]
    h = reference.forward(ref, toks, hidden=True)
    got = m.embed([text, text], pooling=pooling, normalize=False, batch_tokens=5)
    if pooling == "none":
        assert isinstance(got, list) and got[0].shape == (len(toks), 256)
        np.testing.assert_allclose(got[0], h, rtol=1e-3, atol=1e-3)
        return
    want = h.mean(0) if pooling == "mean" else h[0]
    np.testing.assert_allclose(got[0], want, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(got[0], got[1])


def test_token_ids_are_used_as_given(emb_path):
    m = tribit.load(emb_path, kv_type="f32")
    toks = m.tokenizer.encode("ids", add_bos=None, special=True, add_eos=True)
    np.testing.assert_array_equal(m.embed([toks]), m.embed("ids"))


def test_errors(emb_path, tmp_path):
    m = tribit.load(emb_path, n_ctx=16)
    with pytest.raises(ContextLengthError):
        m.embed("word " * 40)
    with pytest.raises(ModelError, match="out of range"):
        m.embed([[1, 99999]])
    with pytest.raises(TribitError, match="empty"):
        m.embed([[]])
    with pytest.raises(TribitError, match="pooling must be"):
        m.embed("x", pooling="max")
    gen = tribit.load(qwen3_model(tmp_path / "g.gguf", "i2_s"))
    assert gen.config.pooling is None
    with pytest.raises(TribitError, match="defines no pooling"):
        gen.embed("x")
    assert gen.embed("x", pooling="last").shape == (1, 256)
    assert m.embed([]).shape == (0, 256)


def test_mean_trap_warns(tmp_path):
    from tribit.embedding import PoolingWarning

    md = {"qwen3.pooling_type": np.uint32(1), "tokenizer.ggml.add_eos_token": True}
    m = tribit.load(qwen3_model(tmp_path / "m.gguf", "i2_s", norm_in=True, extra_md=md))
    with pytest.warns(PoolingWarning, match="last-token"):
        m.embed("x")
