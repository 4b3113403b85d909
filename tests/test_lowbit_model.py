"""Models with Q2_0 / Q1_0 weights (projections, embedding and head): the runtime against the
numpy oracle in both arithmetic modes, every ISA bit-identical, mainline llama.cpp as the
independent reference, and the refusals of docs/FORMATS.md 3.11 (Hadamard-folded files,
PQ2_0 / PTQ1_0, legacy group-128 blocks under id 42)."""

from __future__ import annotations

import numpy as np
import pytest

import mainline
from tiny_models import random_weights, tiny_model, write_model
from tribit import _core
from tribit.errors import FormatError, ModelError
from tribit.formats import GGMLType, GGUFReader, GGUFWriter
from tribit.model.model import load
from tribit.model.reference import forward, load_reference

TOKENS = [int(t) for t in np.random.default_rng(0).integers(0, 256, 24)]


@pytest.fixture(scope="module", params=["q2_0", "q1_0"])
def lowbit_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("lowbit") / f"tiny-{request.param}.gguf"
    # llama arch: n_vocab 300 (head rows not a multiple of the 8-row groups), GQA 4 / 2
    tiny_model(path, arch="llama", qtype=request.param, emb_type=request.param, n_vocab=300)
    return path


def _logits(path, **kw):
    return load(path, n_threads=2, **kw).forward(TOKENS, 0, logits="all")


@pytest.mark.parametrize("mode", ["llama", "float"])
def test_runtime_matches_oracle_on_every_isa(lowbit_file, mode):
    r = GGUFReader(lowbit_file)
    assert {r.tensors[n].type_name for n in r.tensors if ".attn_q" in n} in ({"Q2_0"}, {"Q1_0"})
    got = {isa: _logits(lowbit_file, isa=isa, group_mode=mode) for isa in _core.runnable_isas()}
    first = next(iter(got.values()))
    for isa, logits in got.items():  # the kernels are bit-exact, so is the forward
        assert np.array_equal(logits, first), isa
    ref = forward(load_reference(lowbit_file, group_mode=mode), TOKENS)
    scale = np.abs(ref).max()
    # mode (b): float rounding only; mode (a): the runtime's float32 norms / f16 KV cache move
    # a Q8_0 code by one step now and then (a step is 1/127 of its block's max)
    bound = 5e-4 if mode == "float" else 2e-2
    assert np.abs(first - ref).max() <= bound * scale


def test_bad_group_mode(lowbit_file):
    with pytest.raises(ModelError, match="group_mode"):
        load(lowbit_file, group_mode="fast")


@pytest.mark.slow
def test_mainline_llama_cpp_same_logits_and_tokens(lowbit_file):
    """Mainline llama.cpp on the same file (tests/mainline.py), f32 KV caches on both sides:
    llama's graph (normal RoPE, GQA, SwiGLU, untied Q2_0 / Q1_0 head with 300 rows) gives
    bit-identical logits for the prompt and at every greedy step, on every ISA. With
    llama.cpp's default f16 KV cache it rounds q and the attention weights to f16 for its f16
    dot products, tribit keeps them float; a rounded value moves a Q8_0 code by one step
    (1/127 of its block's max) now and then: within 3 % of the range (measured ~1 %)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python 0.3.36 not installed")
    mainline.check(lowbit_file, TOKENS)
    f16 = llama_cpp.Llama(str(lowbit_file), n_ctx=128, logits_all=True, verbose=False)
    f16.eval(TOKENS)
    theirs16 = np.asarray(f16.scores[: len(TOKENS)], np.float32)
    ours16 = _logits(lowbit_file)
    assert np.abs(ours16 - theirs16).max() <= 0.03 * np.abs(theirs16).max()


# ---- refusals ------------------------------------------------------------------------------


def test_refuses_hadamard_metadata(tmp_path):
    path = tmp_path / "rotated.gguf"
    wts = random_weights(256, 512, 1, 4, 2, 300, sub_norms=False, tied=False)
    write_model(
        path,
        wts,
        "llama",
        "q2_0",
        "q2_0",
        extra_md={"prism.hadamard.block_size": 128, "prism.hadamard.seed": 7},
    )
    with pytest.raises(ModelError, match=r"Hadamard-folded weights \(prism.hadamard.block_size"):
        load(path)
    with pytest.raises(ModelError, match="rotated first"):
        load_reference(path)


def _single_tensor_file(path, ggml_type: int, shape, nbytes: int, extra: int = 0) -> None:
    """A file whose one tensor declares `ggml_type` and holds `nbytes` bytes of data."""
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    # write as U8 with the right byte count, then patch the type id in the tensor info
    w.add_tensor(
        "blk.0.attn_q.weight", (nbytes + extra,), GGMLType.I8, np.zeros(nbytes + extra, np.uint8)
    )
    w.write()
    data = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name)
    # n_dims (u32), dims (u64 each), type (u32), offset (u64)
    assert int.from_bytes(data[at : at + 4], "little") == 1
    dims = b"".join(int(d).to_bytes(8, "little") for d in reversed(shape))
    new = len(shape).to_bytes(4, "little") + dims + ggml_type.to_bytes(4, "little")
    old_len = 4 + 8 + 4
    data[at : at + old_len] = new
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("ggml_type,name", [(142, "PQ2_0"), (143, "PTQ1_0")])
def test_refuses_prism_types(tmp_path, ggml_type, name):
    path = tmp_path / "prism.gguf"
    _single_tensor_file(path, ggml_type, (4, 128), 4 * 34)
    with pytest.raises(FormatError, match=rf"{name} \(type {ggml_type}\).*Hadamard-rotated"):
        GGUFReader(path)


def test_refuses_legacy_group_128_q2_0(tmp_path):
    m, k = 64, 1024  # group-64 Q2_0 would need 18432 bytes, the legacy blocks take 17408
    path = tmp_path / "legacy.gguf"
    _single_tensor_file(path, GGMLType.Q2_0, (m, k), m * k // 128 * 34)
    with pytest.raises(FormatError, match="legacy group-128 Q2_0 .*512 blocks of 34 bytes"):
        GGUFReader(path)
    # the same tensor holding mainline Q2_0 bytes reads
    ok = tmp_path / "mainline.gguf"
    _single_tensor_file(ok, GGMLType.Q2_0, (m, k), m * k // 64 * 18)
    assert GGUFReader(ok).tensors["blk.0.attn_q.weight"].nbytes == m * k // 64 * 18
