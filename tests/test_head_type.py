"""A smaller head as the user's choice: `tribit.load(head_type=...)` repacks an
F32/F16/BF16 embedding/head at load; the writer stores Q6_K heads; files with Q6_K heads
(bitnet.cpp's --quant-embd) load and run."""

from __future__ import annotations

import numpy as np
import pytest

import tribit
from tiny_models import kld_top1, tiny_model
from tribit import _core
from tribit.errors import ModelError
from tribit.formats import GGMLType, GGUFReader
from tribit.model import reference
from tribit.quant import (
    dequantize_q6_k,
    q6_k_q8_k_matmul_ref,
    quantize_q6_k,
    quantize_q8_0,
    quantize_q8_k,
)

gguf = pytest.importorskip("gguf")
KLD_MAX, TOP1_MIN = 2e-3, 0.95


def _tokens(n=32, seed=2, n_vocab=300):
    return np.random.default_rng(seed).integers(0, n_vocab, n)


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "llama"])  # tied and untied heads
@pytest.mark.parametrize("emb_type", ["f16", "f32"])
@pytest.mark.parametrize("head_type", ["q8_0", "q6_k"])
def test_repacked_head_matches_the_oracle_on_the_same_head(tmp_path, arch, emb_type, head_type):
    path = tiny_model(tmp_path / "m.gguf", arch=arch, emb_type=emb_type, seed=11)
    toks = _tokens()
    m = tribit.load(path, kv_type="f32", head_type=head_type)
    assert m.head_type == head_type and m.describe()["head_type"] == head_type
    got = m.logits(toks)
    want = reference.forward(reference.load_reference(path, head_type=head_type), toks)
    kld, top1 = kld_top1(want, got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)
    # the quantized head moved the logits (it is not silently the f16 one) ...
    lossless = tribit.load(path, kv_type="f32")
    assert lossless.head_type == emb_type
    assert not np.array_equal(lossless.logits(toks), got)
    # ... and costs less memory: (n_vocab, n_embd) once per distinct matrix
    n_vocab, k = m.config.n_vocab, m.config.n_embd
    per = {"q8_0": k // 32 * 34, "q6_k": k // 256 * 210}[head_type] * n_vocab
    el = {"f16": 2, "f32": 4}[emb_type] * n_vocab * k
    n_mat = 1 if m.config.tied_head else 2
    assert lossless.describe()["weight_bytes"] - m.describe()["weight_bytes"] == n_mat * (el - per)


def test_repacked_embedding_rows_are_the_spec_s(tmp_path):
    """The runtime's native Q6_K quantizer gives the spec's bytes: the embedding of the
    repacked model is exactly the numpy dequantization of the numpy quantization."""
    path = tiny_model(tmp_path / "m.gguf", emb_type="f16", seed=12)
    r = GGUFReader(path)
    emb = r.array("token_embd.weight").astype(np.float32)
    q = quantize_q6_k(emb)
    m = tribit.load(path, head_type="q6_k")
    assert m.embd_bytes == q.nbytes
    fm = _core.FloatMatrix(q, "q6_k", *emb.shape)
    dense = dequantize_q6_k(q, emb.shape)
    assert np.array_equal(_core.float_rows(fm, np.arange(emb.shape[0], dtype=np.int64)), dense)
    q8 = tribit.load(path, head_type="q8_0")
    assert q8.embd_bytes == quantize_q8_0(emb).nbytes


@pytest.mark.parametrize("arch", ["bitnet-b1.58", "llama"])  # tied and untied heads
def test_q6_k_head_is_the_integer_path(tmp_path, arch, monkeypatch):
    """A q6_k head's logits are, bit for bit, the integer path's spec on the model's own
    final-norm rows (q8_K activations, exact block sums), for a token alone or in a batch
    and on 1 or 2 threads; TRIBIT_Q6K_HEAD=float (or q6_k_int_head = False) runs the float
    kernel instead, the lossy step the integer path adds measured against the f16 head."""
    path = tiny_model(tmp_path / "m.gguf", arch=arch, emb_type="f16", seed=14)
    toks = _tokens(9)
    r = GGUFReader(path)
    name = "token_embd.weight" if arch == "bitnet-b1.58" else "output.weight"
    emb = r.array(name).astype(np.float32)
    raw = quantize_q6_k(emb)
    f16 = tribit.load(path, kv_type="f32").logits(toks)
    for nt in (1, 2):
        m = tribit.load(path, kv_type="f32", head_type="q6_k", n_threads=nt)
        assert m._native.q6_k_int_head
        hidden = m.forward(toks, pos=0, logits="all", hidden=True)
        m.reset()
        got = m.forward(toks, pos=0, logits="all")
        want = q6_k_q8_k_matmul_ref(raw, quantize_q8_k(hidden), emb.shape[1])
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
        m.reset()
        m._native.q6_k_int_head = False
        flt = m.forward(toks, pos=0, logits="all")
        fm = _core.FloatMatrix(raw, "q6_k", *emb.shape)
        assert np.array_equal(flt, _core.float_matmul(fm, hidden, n_threads=nt))
        # the integer path's extra error is of the order of the Q6_K head's own
        kld_i, _ = kld_top1(f16.astype(np.float64), got)
        kld_f, _ = kld_top1(f16.astype(np.float64), flt)
        assert kld_i <= 2 * kld_f + 1e-4, (kld_i, kld_f)
    monkeypatch.setenv("TRIBIT_Q6K_HEAD", "float")
    assert not tribit.load(path, head_type="q6_k")._native.q6_k_int_head


def test_head_type_errors(tmp_path):
    path = tiny_model(tmp_path / "m.gguf", seed=13)  # n_embd 256
    with pytest.raises(ModelError, match="head_type must be one of q8_0, q6_k"):
        tribit.load(path, head_type="q4_0")
    narrow = tiny_model(tmp_path / "n.gguf", qtype="f32", n_embd=160, n_ff=256, seed=13)
    with pytest.raises(ModelError, match="multiple of 256.*160 columns"):
        tribit.load(narrow, head_type="q6_k")
    tribit.load(narrow, head_type="q8_0")  # 160 % 32 == 0
    odd = tiny_model(tmp_path / "o.gguf", qtype="f32", n_embd=144, n_ff=256, seed=13)
    with pytest.raises(ModelError, match="multiple of 32"):
        tribit.load(odd, head_type="q8_0")
    quant = tiny_model(tmp_path / "q.gguf", emb_type="q8_0", seed=13)
    with pytest.raises(ModelError, match="stored as Q8_0"):
        tribit.load(quant, head_type="q6_k")
    assert tribit.load(quant, head_type="q8_0").head_type == "q8_0"  # its own type: as is


@pytest.mark.parametrize("tied", [True, False])
def test_q6_k_file_from_the_writer_loads_and_decodes(tmp_path, tied):
    """The writer's `--head q6_k` (a tiny dummy layout): Q6_K token_embd/output that
    gguf-py reads as type 14 with our bytes' values; the file loads, agrees with the
    oracle and greedy-decodes like it."""
    from tribit.convert.dummy import dummy_plan
    from tribit.convert.layouts import Layout
    from tribit.convert.writer import write_gguf

    lay = Layout(
        "tiny",
        "bitnet-b1.58" if tied else "llama",
        n_embd=256,
        n_ff=512,
        n_layer=2,
        n_head=4,
        n_head_kv=2,
        n_vocab=300,
        tied=tied,
        source="test",
    )
    path = tmp_path / "d.gguf"
    rep = write_gguf(dummy_plan(lay, seed=3), path, head="q6_k", progress=False)
    assert rep.types["Q6_K"] == (1 if tied else 2)
    g = gguf.GGUFReader(str(path))
    ours = GGUFReader(path)
    for t in g.tensors:
        if t.name not in ("token_embd.weight", "output.weight"):
            continue
        assert t.tensor_type == gguf.GGMLQuantizationType.Q6_K == 14
        assert ours.tensors[t.name].ggml_type == GGMLType.Q6_K
        shape = ours.tensors[t.name].shape
        theirs = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        assert np.array_equal(theirs, dequantize_q6_k(ours.raw(t.name), shape))
    m = tribit.load(path, kv_type="f32")
    assert m.head_type == "q6_k" and m.config.tied_head == tied
    ref = reference.load_reference(path)
    toks = [int(t) for t in _tokens(8)]
    want, got = list(toks), list(toks)
    for _ in range(6):  # greedy, token by token, against the oracle's argmax
        got.append(int(np.argmax(m.logits(got)[-1])))
        want.append(int(np.argmax(reference.forward(ref, want)[-1])))
    assert got == want
    kld, top1 = kld_top1(reference.forward(ref, toks), m.logits(toks))
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)
    from tribit.generation import generate

    assert isinstance(generate(m, toks[:4], max_tokens=4, temperature=0.0), str)


def test_writer_head_q6_k_fallbacks():
    from tribit.convert.writer import head_storage

    assert head_storage("q6_k", 2560) == GGMLType.Q6_K
    assert head_storage("q6_k", 160) == GGMLType.Q8_0  # llama.cpp's k-quant fallback
    assert head_storage("q6_k", 100) == GGMLType.F16


def test_cli_head_type(tmp_path, capsys):
    from tribit.cli.main import main

    path = tiny_model(tmp_path / "m.gguf", emb_type="f16", seed=15)
    text = tmp_path / "t.txt"
    text.write_text("Mary went to the kitchen. John picked up the apple. " * 20)
    for head in (None, "q8_0", "q6_k"):
        args = [
            "perplexity",
            "-m",
            str(path),
            "-f",
            str(text),
            "-c",
            "64",
            "--json",
            "--no-progress",
            "-t",
            "1",
        ]
        assert main(args + (["--head-type", head] if head else [])) == 0
        assert '"ppl"' in capsys.readouterr().out
    assert (
        main(
            [
                "run",
                "-m",
                str(path),
                "-p",
                "Mary",
                "-n",
                "4",
                "--temp",
                "0",
                "--head-type",
                "q6_k",
                "--no-perf",
            ]
        )
        == 0
    )
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["run", "-m", str(path), "-p", "Mary", "--head-type", "q4_0"])


def test_serve_head_type(tmp_path):
    """`tribit serve --head-type q6_k`: the server loads the repacked head and answers."""
    import httpx

    from server_process import serving

    path = tiny_model(tmp_path / "m.gguf", emb_type="f16", seed=16)
    with serving(path, "--parallel", "1", "-c", "64", "-t", "1", "--head-type", "q6_k") as base:
        r = httpx.post(
            base + "/v1/completions",
            json={"prompt": "ab", "max_tokens": 3, "temperature": 0},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
