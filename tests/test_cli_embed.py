"""`tribit embed`: JSON on stdout, .npy and JSON files, --dimensions, errors."""

import json

import numpy as np

from tiny_models import qwen3_model
from tribit.cli.main import main

MD = {"qwen3.pooling_type": np.uint32(3), "tokenizer.ggml.add_eos_token": True}


def test_cli_embed(tmp_path, capsys):
    path = str(qwen3_model(tmp_path / "e.gguf", "i2_s", norm_in=True, extra_md=MD))
    assert main(["embed", "-m", path, "hello", "world", "-t", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    v = np.array([d["embedding"] for d in doc["data"]])
    assert v.shape == (2, 256) and doc["dim"] == 256
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    out = tmp_path / "v.npy"
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n\nworld\n")
    assert main(["embed", "-m", path, "-f", str(texts), "-o", str(out), "--dimensions", "8"]) == 0
    w = np.load(out)
    assert w.shape == (2, 8) and w.dtype == np.float32
    np.testing.assert_allclose(
        w, v[:, :8] / np.linalg.norm(v[:, :8], axis=1, keepdims=True), atol=1e-6
    )
    assert main(["embed", "-m", path]) == 1
    assert "no texts" in capsys.readouterr().err
    assert main(["embed", "-m", path, "x", "--dimensions", "999"]) == 1
