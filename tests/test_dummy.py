"""`tribit dummy`: layouts, streaming generation, determinism, tokenizer, sane activations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tribit.convert import write_gguf
from tribit.convert.dummy import dummy_plan
from tribit.convert.layouts import LAYOUTS, Layout, get_layout
from tribit.errors import FormatError

# bitnet.cpp utils/generate-dummy-bitnet-model.py (docs/FORMATS.md 4.1): hidden, ffn, layers, heads
BITNET_CPP = {
    "125M": (768, 3072, 11, 12),
    "350M": (1024, 3072, 24, 16),
    "1B": (2048, 3584, 24, 32),
    "1.5B": (1536, 9216, 28, 32),
    "2.7B": (3072, 7680, 24, 32),
    "3.8B": (3840, 8192, 24, 32),
    "7B": (4096, 12032, 32, 32),
    "13B": (5120, 13824, 40, 40),
    "30B": (6656, 16384, 60, 52),
    "70B": (8192, 24576, 80, 64),
    "100B": (8192, 45568, 72, 64),
}
TINY = Layout("tiny", "bitnet", 256, 512, 2, 4, 4, 600)


def test_layout_table_matches_bitnet_cpp():
    for name, (n_embd, n_ff, n_layer, n_head) in BITNET_CPP.items():
        lay = LAYOUTS[name]
        assert (lay.n_embd, lay.n_ff, lay.n_layer, lay.n_head) == (n_embd, n_ff, n_layer, n_head)
        assert lay.arch == "bitnet" and lay.n_head_kv == lay.n_head and lay.n_vocab == 32002
    real = {
        "large": ("bitnet", 1536, 4096, 24, 16, 16, 32002),
        "3B": ("bitnet", 3200, 8640, 26, 32, 32, 32002),
        "2B-4T": ("bitnet-b1.58", 2560, 6912, 30, 20, 5, 128256),
        "8B": ("llama", 4096, 14336, 32, 32, 8, 128256),
    }
    for name, row in real.items():
        lay = get_layout(name.lower())
        assert (
            lay.arch,
            lay.n_embd,
            lay.n_ff,
            lay.n_layer,
            lay.n_head,
            lay.n_head_kv,
            lay.n_vocab,
        ) == row
    assert 2.3e9 < LAYOUTS["2B-4T"].n_params() < 2.5e9
    assert 7.9e9 < LAYOUTS["8B"].n_params() < 8.1e9
    assert 68e9 < LAYOUTS["70B"].n_params() < 72e9
    with pytest.raises(FormatError, match="125M"):
        get_layout("5B")


def _read(path):
    from tribit.formats import GGUFReader

    return GGUFReader(path)


def test_dummy_file_and_weights(tmp_path):
    out = tmp_path / "d.gguf"
    rep = write_gguf(dummy_plan(TINY, seed=7), out, qtype="tq2_0", progress=False)
    assert rep.types == {"F16": 1, "F32": 9, "TQ2_0": 14}
    import gguf

    g = gguf.GGUFReader(str(out))  # mainline's reader takes it
    tensors = {t.name: t for t in g.tensors}
    r = _read(out)
    md = r.metadata
    assert md["general.architecture"] == "bitnet" and md["bitnet.attention.head_count_kv"] == 4
    assert md["general.file_type"] == 37 and md["tribit.dummy.seed"] == 7
    for name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        w = gguf.quants.dequantize(tensors[name].data, tensors[name].tensor_type)
        gamma = md[f"tribit.scale.{name}"]
        vals = np.unique(np.round(w.reshape(-1) / np.abs(w).max(), 6))
        assert set(vals) == {-1.0, 0.0, 1.0}
        zeros = np.mean(w == 0)
        assert 0.3 < zeros < 0.37
        k = w.shape[-1]
        assert 0.8 / np.sqrt(2 * k / 3) <= gamma <= 1.2 / np.sqrt(2 * k / 3) + 1e-7
    embd = gguf.quants.dequantize(tensors["token_embd.weight"].data, gguf.GGMLQuantizationType.F16)
    assert 0.04 < embd.std() < 0.06
    norm = np.asarray(tensors["blk.0.ffn_sub_norm.weight"].data)
    assert norm.shape == (512,) and 0.9 <= norm.min() and norm.max() <= 1.1


def test_dummy_is_deterministic_and_order_independent(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    write_gguf(dummy_plan(TINY, seed=1), a, progress=False)
    write_gguf(dummy_plan(TINY, seed=1), b, progress=False)
    write_gguf(dummy_plan(TINY, seed=2), c, progress=False)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    plan = dummy_plan(TINY, seed=1)
    last = [tp for tp in plan.tensors if tp.kind == "ternary"][-1]
    t1, g1 = last.load_ternary()
    _ = [tp.load() if tp.load else tp.load_ternary() for tp in plan.tensors[:5]]
    t2, g2 = last.load_ternary()
    assert g1 == g2 and np.array_equal(t1, t2)


def test_dummy_tokenizer_is_real_and_padded(tmp_path):
    from tribit.tokenizer import Tokenizer

    out = tmp_path / "t.gguf"
    write_gguf(dummy_plan(dataclasses.replace(TINY, n_vocab=1100)), out, progress=False)
    md = _read(out).metadata
    tokens = md["tokenizer.ggml.tokens"]
    assert len(tokens) == 1100 and tokens[-1] == "<|reserved_75|>"  # 1024 trained + 76 padding
    tok = Tokenizer.from_gguf(md)
    text = "The quick brown fox went to the kitchen."
    ids = tok.encode(text, add_bos=False)
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # merges learned from the corpus
    assert tok.bos_id is not None and tokens[tok.bos_id] == "<|begin_of_text|>"


@pytest.mark.parametrize("arch", ["bitnet", "bitnet-b1.58", "llama"])
def test_dummy_activations_are_sane(tmp_path, arch):
    """A numpy forward (gguf-py weights) stays finite with moderate logits in every arch."""
    import hf_checkpoints as H

    lay = dataclasses.replace(
        TINY, arch=arch, n_head_kv=2 if arch != "bitnet" else 4, tied=arch != "llama"
    )
    out = tmp_path / "s.gguf"
    write_gguf(dummy_plan(lay, seed=3), out, qtype="tq1_0", progress=False)
    meta, w = H.read_gguf(out)
    assert ("output.weight" in w) == (arch == "llama")
    logits = H.forward(meta, w, list(range(1, 40)))
    assert np.all(np.isfinite(logits))
    assert 0.1 < logits.std() < 20
    assert len(set(logits.argmax(-1).tolist())) > 3  # not collapsed to one token


def test_dummy_cli(tmp_path, capsys):
    from tribit.cli.main import main

    assert main(["dummy", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "70B" in listing and "2B-4T" in listing
    out = tmp_path / "c.gguf"
    assert main(["dummy", "--layout", "nope", "-o", str(out)]) == 1
    assert not out.exists()


def test_dummy_runs_in_the_runtime(tmp_path):
    from tribit.model import load

    out = tmp_path / "r.gguf"
    write_gguf(dummy_plan(TINY, seed=5), out, progress=False)
    model = load(str(out), n_threads=1)
    ids = [0, 300, 301, 302, 450, 599]
    logits = np.asarray(model.logits(ids))
    assert logits.shape == (len(ids), 600) and np.all(np.isfinite(logits))
    assert 0.1 < logits.std() < 20
    ids = model.tokenize("Where is the apple?")
    assert model.detokenize(ids[1:]) == "Where is the apple?"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["125M", "2B-4T"])
def test_real_layout_cli(tmp_path, layout):
    """A full layout through the CLI (2B-4T: 128256-token vocabulary, GQA, ~0.8 GB)."""
    from tribit.cli.main import main

    out = tmp_path / "l.gguf"
    assert main(["dummy", "--layout", layout, "-o", str(out), "--no-progress"]) == 0
    r = _read(out)
    lay = get_layout(layout)
    arch = r.metadata["general.architecture"]
    assert arch == lay.arch and r.metadata[f"{arch}.block_count"] == lay.n_layer
    assert r.tensors["token_embd.weight"].shape == (lay.n_vocab, lay.n_embd)
    assert len(r.metadata["tokenizer.ggml.tokens"]) == lay.n_vocab
