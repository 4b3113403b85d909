"""Fine-tuning an exported file (`tribit train babi --init`, tribit.train.from_gguf): the
loaded model is the file's model exactly (re-exported, every tensor byte and scale equal;
its forward equals tribit's), and the CLI trains from it and exports with the chat metadata."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tribit.data import babi, default_model_path  # noqa: E402
from tribit.formats import GGUFReader  # noqa: E402
from tribit.train.export import export_gguf  # noqa: E402
from tribit.train.from_gguf import load_gguf  # noqa: E402
from tribit.train.tokenizer import Encoder  # noqa: E402


def _embedded():
    path = default_model_path()
    if path is None:
        pytest.skip("no embedded model in this installation")
    return path


def test_loaded_file_reexports_to_the_same_tensors(tmp_path):
    src = _embedded()
    model, tok = load_gguf(src)
    out = export_gguf(model, tok, tmp_path / "again.gguf")
    with GGUFReader(src) as a, GGUFReader(out) as b:
        assert set(a.tensors) == set(b.tensors)
        for name in a.tensors:
            assert bytes(a.raw(name)) == bytes(b.raw(name)), name
        scales = [k for k in a.metadata if k.startswith("tribit.scale.")]
        assert len(scales) == 28
        assert all(a.metadata[k] == b.metadata[k] for k in scales)
        for k, v in a.metadata.items():
            if k.startswith("tokenizer.ggml."):
                assert np.array_equal(np.asarray(v), np.asarray(b.metadata[k])), k


def test_loaded_file_computes_what_tribit_computes():
    import tribit

    model, tok = load_gguf(_embedded())
    model.eval()
    model.runtime_math = True
    enc = Encoder(tok)
    rt = tribit.load(_embedded(), n_threads=1, kv_type="f32")
    for ex in [babi.SEED, *babi.generate(4, "shapes", seed=2, tasks=(1,))]:
        ids = [enc.bos] + enc.encode(ex.prompt)
        assert ids == rt.tokenize(ex.prompt)
        with torch.no_grad():
            ref = model(torch.tensor([ids]))[0, -1].numpy()
        rt.reset()
        got = rt.forward(ids, pos=0)[-1]
        assert np.abs(ref - got).max() <= 1e-5 * np.abs(ref).max()


def test_train_cli_fine_tunes_a_file(tmp_path, capsys):
    """--init takes the file's shape and tokenizer (not --n-layer / --vocab), trains, and
    the export carries the chat metadata."""
    from tribit.cli.main import main

    out = tmp_path / "ft.gguf"
    args = [
        "train",
        "babi",
        "--init",
        str(_embedded()),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch",
        "2",
        "--threads",
        "1",
        "--n-layer",
        "1",
        "--vocab",
        "300",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "after 2 steps" in capsys.readouterr().out
    ck = torch.load(tmp_path / "ft.ckpt" / "model.pt", weights_only=False)
    assert ck["settings"]["init"] == str(_embedded()) and ck["config"]["n_layer"] == 4
    with GGUFReader(out) as r, GGUFReader(_embedded()) as a:
        md = r.metadata
        assert list(md["tokenizer.ggml.tokens"]) == list(a.metadata["tokenizer.ggml.tokens"])
        assert md["tokenizer.chat_template"] == babi.CHAT_TEMPLATE
        assert md["general.description"] == babi.DESCRIPTION
        assert md["tribit.train.steps"] == 2 and md["tribit.train.init"] == _embedded().name
