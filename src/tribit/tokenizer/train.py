"""Train a small byte-level BPE tokenizer and express it as GGUF metadata."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..errors import TribitError
from ..formats.keys import TokenizerKey, token_id_key
from .hf import metadata_from_hf_bpe

DEFAULT_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")


def train_bpe_metadata(
    texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = DEFAULT_SPECIALS
) -> dict:
    """Train a GPT-2-style byte-level BPE with HF `tokenizers` on `texts`.

    Returns `tokenizer.ggml.*` metadata (model "gpt2", pre "gpt-2": HF's ByteLevel
    pre-tokenizer splits with GPT-2's regex): tokens in id order (specials first, then the
    256 byte characters, then merges), merges, scores, token types (specials CONTROL),
    bos/eos/eot ids from `<|begin_of_text|>`/`<|end_of_text|>`/`<|eot_id|>` (else the first
    three specials), add_bos true. Deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = list(special_tokens)
    if vocab_size < 256 + len(specials):
        raise TribitError(
            f"vocab_size {vocab_size} is below 256 bytes + {len(specials)} special tokens"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    md = metadata_from_hf_bpe(json.loads(tok.to_str()), pre="gpt-2")
    ids = {t: i for i, t in enumerate(md[TokenizerKey.TOKENS])}
    for j, (key, name) in enumerate(
        [("bos", "<|begin_of_text|>"), ("eos", "<|end_of_text|>"), ("eot", "<|eot_id|>")]
    ):
        if name in ids:
            md[token_id_key(key)] = ids[name]
        elif j < len(specials):
            md[token_id_key(key)] = ids[specials[j]]
    md[TokenizerKey.ADD_BOS] = True
    return md
