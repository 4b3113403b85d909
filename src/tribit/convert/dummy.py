"""Random ternary models in named layouts (`tribit dummy`), generated while streaming.

Every tensor is produced inside the writer's callable from its own seeded generator
(`SeedSequence([seed, tensor index])`), so a 70B layout needs memory for one tensor only, and
the bytes of a tensor do not depend on the order in which tensors are written.

Weights: ternary t uniform over {-1, 0, +1} (1/3 zeros) with gamma = c / sqrt(2K/3), c in
[0.8, 1.2] per tensor, so a projection keeps unit-variance inputs near unit variance; norm
weights uniform in [0.9, 1.1]; token_embd (and an untied output) normal with std 0.05.
The tokenizer is a real byte-level BPE trained on `corpus.CORPUS`, padded with
`<|reserved_N|>` control tokens up to the layout's n_vocab.
"""

from __future__ import annotations

import numpy as np

from tribit.errors import FormatError
from tribit.formats.keys import (
    ATTN_NORM,
    ATTN_SUB_NORM,
    FFN_NORM,
    FFN_SUB_NORM,
    INPUT_NORM,
    LLM,
    OUTPUT,
    OUTPUT_NORM,
    PROJECTIONS,
    QK_NORM_ARCHS,
    QK_NORMS,
    SUB_NORM_ARCHS,
    TOKEN_EMBD,
    Dims,
    Projection,
    TokenizerKey,
    TokenType,
    Tribit,
    arch_key,
    block_tensor,
    token_id_key,
)

from .corpus import corpus_texts
from .layouts import Layout, get_layout
from .writer import ModelPlan, TensorPlan

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
BPE_VOCAB = 1024  # trained vocabulary (bytes + merges + specials) before padding
EMBD_STD = 0.05


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))


def dummy_tokenizer(n_vocab: int) -> dict[str, object]:
    """Byte-level BPE metadata trained on the built-in corpus, padded to `n_vocab` tokens."""
    from tribit.tokenizer.train import train_bpe_metadata

    meta = dict(
        train_bpe_metadata(
            corpus_texts(), min(BPE_VOCAB, n_vocab), special_tokens=list(SPECIAL_TOKENS)
        )
    )
    tokens = list(meta[TokenizerKey.TOKENS])
    if len(tokens) > n_vocab:
        raise FormatError(f"dummy tokenizer has {len(tokens)} tokens, layout only {n_vocab}")
    ids = {tok: i for i, tok in enumerate(tokens)}
    n_pad = n_vocab - len(tokens)
    meta[TokenizerKey.TOKENS] = tokens + [f"<|reserved_{i}|>" for i in range(n_pad)]
    if TokenizerKey.TOKEN_TYPE in meta:
        types = np.asarray(meta[TokenizerKey.TOKEN_TYPE], dtype=np.int32)
        meta[TokenizerKey.TOKEN_TYPE] = np.concatenate(
            [types, np.full(n_pad, TokenType.CONTROL, np.int32)]
        )
    if TokenizerKey.SCORES in meta:
        scores = np.asarray(meta[TokenizerKey.SCORES], dtype=np.float32)
        meta[TokenizerKey.SCORES] = np.concatenate([scores, np.zeros(n_pad, np.float32)])
    # make sure the special ids are set even if the trainer left them out
    meta.setdefault(token_id_key("bos"), ids["<|begin_of_text|>"])
    meta.setdefault(token_id_key("eos"), ids["<|end_of_text|>"])
    meta.setdefault(token_id_key("eot"), ids["<|eot_id|>"])
    meta.setdefault(TokenizerKey.ADD_BOS, True)
    return meta


def _ternary(shape: tuple[int, int], seed: int, index: int):
    m, k = shape
    gamma = np.float32(_rng(seed, index).uniform(0.8, 1.2) / np.sqrt(2.0 * k / 3.0))

    def load() -> tuple[np.ndarray, np.float32]:
        rng = _rng(seed, index)
        rng.uniform()  # the draw used for gamma above
        return rng.integers(-1, 2, size=(m, k), dtype=np.int8), gamma

    return load, gamma


def _normal(shape: tuple[int, ...], std: float, seed: int, index: int):
    def load() -> np.ndarray:
        out = _rng(seed, index).standard_normal(size=shape, dtype=np.float32)
        out *= np.float32(std)
        return out

    return load


def _norm(width: int, seed: int, index: int):
    return lambda: _rng(seed, index).uniform(0.9, 1.1, size=width).astype(np.float32)


def dummy_plan(layout: str | Layout, seed: int = 0, n_layer: int | None = None) -> ModelPlan:
    """A `ModelPlan` of random weights in `layout`; `n_layer` truncates the layer count (tests)."""
    from .families import HParams, gguf_hparams

    lay = get_layout(layout) if isinstance(layout, str) else layout
    n_layer = lay.n_layer if n_layer is None else n_layer
    hd = lay.head_dim
    dims = Dims.of(lay.n_embd, lay.n_ff, lay.n_head, lay.n_head_kv, hd)
    block = [ATTN_NORM, *PROJECTIONS, FFN_NORM]  # a block's tensors, in file and seed order
    if lay.arch in SUB_NORM_ARCHS:
        block += [ATTN_SUB_NORM, FFN_SUB_NORM]
    if lay.arch in QK_NORM_ARCHS:
        block += list(QK_NORMS)
    if lay.norm_in:
        block += list(INPUT_NORM.values())
    counter = iter(range(1 << 30))
    tensors = [
        TensorPlan(
            TOKEN_EMBD,
            (lay.n_vocab, lay.n_embd),
            "embd",
            load=_normal((lay.n_vocab, lay.n_embd), EMBD_STD, seed, next(counter)),
        )
    ]
    for i in range(n_layer):
        for t in block:
            name = block_tensor(i, t.suffix)
            if isinstance(t, Projection):
                load, gamma = _ternary(t.shape(dims), seed, next(counter))
                tensors.append(
                    TensorPlan(name, t.shape(dims), "ternary", load_ternary=load, gamma=gamma)
                )
            else:
                (width,) = t.shape(dims)
                tensors.append(
                    TensorPlan(name, (width,), "norm", load=_norm(width, seed, next(counter)))
                )
    tensors.append(
        TensorPlan(OUTPUT_NORM, (lay.n_embd,), "norm", load=_norm(lay.n_embd, seed, next(counter)))
    )
    if not lay.tied:
        tensors.append(
            TensorPlan(
                OUTPUT,
                (lay.n_vocab, lay.n_embd),
                "head",
                load=_normal((lay.n_vocab, lay.n_embd), EMBD_STD, seed, next(counter)),
            )
        )
    hp = HParams(
        n_embd=lay.n_embd,
        n_ff=lay.n_ff,
        n_layer=n_layer,
        n_head=lay.n_head,
        n_head_kv=lay.n_head_kv,
        head_dim=hd,
        n_ctx_train=lay.n_ctx_train,
        rope_theta=lay.rope_theta,
        norm_eps=lay.norm_eps,
        tied=lay.tied,
        rope_scaling=None,
    )
    metadata: dict[str, object] = {Tribit.DUMMY_LAYOUT: lay.name, Tribit.DUMMY_SEED: int(seed)}
    tokenizer = dummy_tokenizer(lay.n_vocab)
    if lay.pooling is not None:  # an embedding model: EOS appended, pooled as the file says
        metadata[arch_key(lay.arch, LLM.POOLING_TYPE)] = np.uint32(lay.pooling)
        tokenizer[TokenizerKey.ADD_EOS] = True
    return ModelPlan(
        arch=lay.arch,
        name=f"dummy-{lay.name}",
        hparams=gguf_hparams(hp, lay.n_vocab, lay.arch),
        tensors=tensors,
        tokenizer=tokenizer,
        metadata=metadata,
    )
