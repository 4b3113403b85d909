"""Can the model tests fail? One-op-wrong oracles, and exact batch invariances.

The comparisons use "sharp" models (sharp_models.sharp_weights): still
well conditioned, but with position-sensitive attention, so that RoPE, GQA and
masking bugs move the logits as much as an FFN bug does.
"""

import dataclasses
import types

import numpy as np
import pytest

import tribit
from sharp_models import N_HEAD, N_VOCAB, sharp_weights
from tiny_models import kld_top1, write_model
from tribit import _core
from tribit.model import reference

KLD_MAX, TOP1_MIN = 2e-3, 0.95
ARCHS = [("bitnet-b1.58", 2), ("bitnet", 2), ("llama", 2)]  # GQA 2: the head mapping matters


def _np_with(**overrides):
    """numpy as the oracle sees it, with some functions swapped for wrong ones."""
    return types.SimpleNamespace(**{**{k: getattr(np, k) for k in dir(np)}, **overrides})


def _swap_rope(rope):
    def wrong(x, pos, cfg):
        other = "normal" if cfg.rope_type == "neox" else "neox"
        return rope(x, pos, dataclasses.replace(cfg, rope_type=other))

    return wrong


WRONG = {  # name -> (module attribute, replacement given the original)
    "relu_for_act": ("act", None),
    "rope_pairing": ("rope", _swap_rope),
    "no_rope": ("rope", lambda rope: lambda x, pos, cfg: x),
    "norm_without_weight": ("rmsnorm", lambda f: lambda x, w, eps: f(x, np.ones_like(w), eps)),
    "gqa_head_mapping": ("np", lambda _: _np_with(repeat=lambda a, r, axis: np.tile(a, (1, r, 1)))),
    "no_causal_mask": ("np", lambda _: _np_with(triu=lambda m, k=0: np.zeros_like(m))),
}


@pytest.fixture(scope="module", params=ARCHS, ids=[a for a, _ in ARCHS])
def sharp(request, tmp_path_factory):
    arch, n_head_kv = request.param
    path = tmp_path_factory.mktemp("sharp") / f"{arch}.gguf"
    w = sharp_weights(n_head_kv, sub_norms=arch != "llama", seed=11)
    write_model(path, w, arch, "tq2_0", n_head=N_HEAD, n_head_kv=n_head_kv)
    tokens = np.random.default_rng(12).integers(0, N_VOCAB, 64)
    got = tribit.load(path, kv_type="f32", n_threads=2).logits(tokens)
    return path, reference.load_reference(path), tokens, got


def test_native_matches_the_oracle_on_sharp_models(sharp):
    _, ref, tokens, got = sharp
    kld, top1 = kld_top1(reference.forward(ref, tokens), got)
    assert kld <= KLD_MAX and top1 >= TOP1_MIN, (kld, top1)


@pytest.mark.parametrize("wrong", list(WRONG))
def test_a_one_op_wrong_oracle_fails_the_bounds(sharp, wrong, monkeypatch):
    _, ref, tokens, got = sharp
    attr, make = WRONG[wrong]
    if attr == "act":
        want = reference.forward(ref, tokens, act=lambda g: np.maximum(g, 0))
    else:
        monkeypatch.setattr(reference, attr, make(getattr(reference, attr)))
        want = reference.forward(ref, tokens)
    kld, top1 = kld_top1(want, got)
    assert kld > KLD_MAX or top1 < TOP1_MIN, (wrong, kld, top1)


@pytest.mark.parametrize("isa", _core.runnable_isas())
def test_prefill_chunks_and_single_steps_agree(sharp, isa):
    """Exactly on generic; other ISAs may round the head's float dot products
    differently for 1 token than for 4 (see the model helper's report)."""
    path, _, tokens, _ = sharp
    m = tribit.load(path, kv_type="f16", isa=isa, n_threads=2)
    tokens = tokens[:40]
    full = m.logits(tokens)
    m.reset()
    chunks = np.concatenate([m.forward(tokens[i : i + 8], logits="all") for i in range(0, 40, 8)])
    m.reset()
    steps = np.concatenate([m.forward([t], logits="all") for t in tokens])
    assert np.array_equal(chunks, full)
    if isa == "generic":
        assert np.array_equal(steps, full)
    kld, top1 = kld_top1(full, steps)
    assert kld <= 1e-9 and top1 == 1.0, (kld, top1)


def test_interleaved_sequences_with_explicit_positions(sharp):
    """llama.cpp batch semantics: three sequences prefilled in one interleaved batch,
    then decoded together, give each sequence's solo logits."""
    path, _, tokens, _ = sharp
    m = tribit.load(path, kv_type="f32", n_seq=4, isa="generic", n_threads=2)
    seqs = [list(tokens[:9]), list(tokens[20:26]), list(tokens[40:52])]
    solo = [m.logits(s) for s in seqs]
    # round-robin interleave all but the last token of each, explicit pos per token
    batch, pos, seq = [], [], []
    for i in range(max(map(len, seqs)) - 1):
        for s_id, s in zip((3, 1, 2), seqs, strict=True):
            if i < len(s) - 1:
                batch.append(s[i])
                pos.append(i)
                seq.append(s_id)
    mask = [p % 2 == 0 for p in pos]  # an arbitrary bool mask: rows in batch order
    rows = m.forward(batch, pos, seq, logits=mask)
    assert rows.shape == (sum(mask), N_VOCAB)
    order = {3: 0, 1: 1, 2: 2}
    for row, p, s in zip(rows, np.array(pos)[mask], np.array(seq)[mask], strict=True):
        assert np.array_equal(row, solo[order[s]][p])
    assert [m.n_past(s) for s in (0, 1, 2, 3)] == [0, len(seqs[1]) - 1, len(seqs[2]) - 1, 8]
    # one decode step for all three; "last" rows come in order of first appearance
    last = m.forward([seqs[2][-1], seqs[0][-1], seqs[1][-1]], None, [2, 3, 1])
    for row, i in zip(last, (2, 0, 1), strict=True):
        assert np.array_equal(row, solo[i][-1])
