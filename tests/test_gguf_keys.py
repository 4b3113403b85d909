"""The one table of GGUF keys and tensor names (tribit.formats.keys): the native binding
agrees with it, every key our writers emit comes from it, no module spells a key or tensor
name of its own, and the trainer's export (now through convert's writer) writes the same
bytes as the exporter it replaced."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from tribit import _core
from tribit.formats import GGUFReader
from tribit.formats import keys as K

PKG = Path(__file__).resolve().parents[1] / "src" / "tribit"


def test_native_projections_are_the_tables():
    assert list(_core.NativeModel.projections) == [
        (p.suffix, p.rows, p.cols) for p in K.PROJECTIONS
    ]


def test_shapes_and_names():
    d = K.Dims.of(n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64)
    assert {p.which: p.shape(d) for p in K.PROJECTIONS} == {
        "q": (256, 256),
        "k": (128, 256),
        "v": (128, 256),
        "o": (256, 256),
        "gate": (512, 256),
        "up": (512, 256),
        "down": (256, 512),
    }
    assert [n.shape(d) for n in K.NORMS] == [(256,), (256,), (256,), (512,)]
    assert K.block_tensor(3, K.PROJECTION["o"].suffix) == "blk.3.attn_output.weight"
    assert K.scale_key(K.block_tensor(0, "attn_q")) == "tribit.scale.blk.0.attn_q.weight"
    assert K.scale_tensor("blk.0.attn_q.weight") == "blk.0.attn_q.scale"
    assert (
        K.arch_key(K.Arch.BITNET_B158, K.LLM.HEAD_COUNT_KV)
        == "bitnet-b1.58.attention.head_count_kv"
    )
    assert K.token_id_key("eot") == K.TokenizerKey.EOT_ID


# --- no key or tensor name spelled outside the table ----------------------------------------

# files other work owns at the time of writing (issue 18 items 1, 7); convert them after merging
EXEMPT: set[str] = set()
_NAME = re.compile(
    r"^(blk\.|tokenizer\.ggml\.|tokenizer\.chat_template$|tribit\.scale\.|"
    r"tribit\.dummy\.|tribit\.train\.|tribit\.embedding\.|general\.)[\w.]*$"
)


def _table_values() -> set[str]:
    out = {K.TOKEN_EMBD, K.OUTPUT, K.OUTPUT_NORM, K.WEIGHT, ".scale"}
    for ns in (K.General, K.LLM, K.TokenizerKey, K.Tribit):
        out |= {v for k, v in vars(ns).items() if k.isupper() and isinstance(v, str)}
    out |= {p.suffix for p in K.PROJECTIONS} | {n.suffix for n in K.NORMS}
    out |= {n.suffix for n in K.QK_NORMS} | {n.suffix for n in K.INPUT_NORM.values()}
    return out


def _stray(tree: ast.AST, table: set[str]) -> list[tuple[int, str]]:
    found = []
    in_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            in_fstring.update(id(v) for v in node.values)
            # a name built from pieces: no spaces, starting like a key or tensor name
            text = "".join(parts)
            if parts and " " not in text and _NAME.match(parts[0] + "x"):
                found.append((node.lineno, text))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in in_fstring
        ):
            if node.value in table or _NAME.match(node.value):
                found.append((node.lineno, node.value))
    return found


def test_no_key_or_tensor_name_outside_the_table():
    table = _table_values()
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel == "formats/keys.py" or rel in EXEMPT:
            continue
        bad += [
            f"{rel}:{line}: {text!r}" for line, text in _stray(ast.parse(path.read_text()), table)
        ]
    assert not bad, "spell these through tribit.formats.keys:\n" + "\n".join(bad)


def test_the_stray_name_check_finds_them():
    src = (
        'x = md["tokenizer.ggml.tokens"]\ny = f"blk.{i}.attn_q.weight"\nz = "attn_norm"\n'
        'ok = f"tokenizer.ggml.tokens has {n} entries"\nw = "general.alignment must be"\n'
    )
    assert sorted(line for line, _ in _stray(ast.parse(src), _table_values())) == [1, 2, 3]


def test_native_sources_name_no_tensor_outside_the_projection_table():
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    for path in csrc.rglob("*.[ch]*"):
        text = path.read_text()
        assert '"blk.' not in text and '"token_embd' not in text, path
        if path.name != "bind_model.cpp":
            assert not re.search(r'"(attn|ffn)_\w+"', text), path


# --- what the writers emit ----------------------------------------------------------------


def _is_table_key(key: str, arch: str) -> bool:
    consts = {
        v
        for ns in (K.General, K.TokenizerKey, K.Tribit)
        for k, v in vars(ns).items()
        if k.isupper() and isinstance(v, str)
    }
    llm = {K.arch_key(arch, v) for k, v in vars(K.LLM).items() if k.isupper()}
    return (
        key in consts
        or key in llm
        or key.startswith(K.Tribit.SCALE_PREFIX)
        or re.fullmatch(re.escape(K.TokenizerKey.PREFIX) + r"\w+_token_id", key) is not None
    )


def test_dummy_files_use_only_table_keys_and_names(tmp_path):
    from tribit.convert import write_gguf
    from tribit.convert.dummy import dummy_plan
    from tribit.convert.layouts import Layout

    for lay in (
        Layout("s", K.Arch.BITNET_B158, 256, 256, 2, 4, 2, 300),
        Layout("l", K.Arch.LLAMA, 256, 256, 1, 4, 2, 300, tied=False),
    ):
        path = tmp_path / f"{lay.name}.gguf"
        write_gguf(dummy_plan(lay), path, progress=False)
        r = GGUFReader(path)
        assert all(_is_table_key(k, lay.arch) for k in r.metadata), sorted(r.metadata)
        block = [K.ATTN_NORM, *K.PROJECTIONS, K.FFN_NORM]
        if lay.arch in K.SUB_NORM_ARCHS:
            block += [K.ATTN_SUB_NORM, K.FFN_SUB_NORM]
        names = {K.TOKEN_EMBD, K.OUTPUT_NORM} | {
            K.block_tensor(i, t.suffix) for i in range(2 if lay.tied else 1) for t in block
        }
        if not lay.tied:
            names.add(K.OUTPUT)
        assert set(r.tensors) == names


# --- train/export.py through convert's writer: the same bytes as before ----------------------

# sha256 of the files the exporter wrote before it went through convert.write_gguf (commit
# cd16fac, its own GGUFWriter assembly), for the model and tokenizer below
OLD_EXPORT_SHA256 = {
    "f32": "5fb6d9faab50726f8a236fbf307994ad7492d163a2c3f672d47c1974c51aaa38",
    "f16": "a751a0500ffd9b1cc60b89ed5afe7bd94b3101a44e3b5b50c20f44e71f654e18",
}


@pytest.mark.parametrize("embd_type", ["f32", "f16"])
def test_export_writes_the_bytes_of_the_old_exporter(tmp_path, embd_type):
    torch = pytest.importorskip("torch")
    from tribit.train.export import export_gguf, provenance
    from tribit.train.model import BitNetConfig, BitNetLM

    cfg = BitNetConfig(n_vocab=40, n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_ctx=64)
    model = BitNetLM(cfg)
    rng = np.random.default_rng(7)  # weights from numpy: no dependence on torch's RNG
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.05))
    tok = {
        K.TokenizerKey.MODEL: "gpt2",
        K.TokenizerKey.TOKENS: [f"t{i}" for i in range(40)],
        K.TokenizerKey.BOS_ID: 1,
        K.TokenizerKey.ADD_BOS: True,
    }
    path = tmp_path / "m.gguf"
    assert export_gguf(model, tok, path, embd_type=embd_type, extra_md=provenance(3, 0)) == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == OLD_EXPORT_SHA256[embd_type]
    assert not list(tmp_path.glob("*.part"))
    r = GGUFReader(path)
    assert all(_is_table_key(k, K.Arch.BITNET_B158) for k in r.metadata)
