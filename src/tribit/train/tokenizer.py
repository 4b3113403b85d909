"""The byte-level BPE of the bAbI model: trained on the train split's text and
stored as GGUF `tokenizer.ggml.*` metadata; `Encoder` encodes with exactly the
BPE that metadata describes (HF `tokenizers`, fast, for training batches)."""

from __future__ import annotations

from ..data import babi
from ..formats.keys import TokenizerKey
from ..tokenizer.train import train_bpe_metadata


def build_tokenizer(vocab_size: int, seed: int = 0, n_texts: int = 6000) -> dict:
    """Train the tokenizer on `n_texts` train-split examples (prompt + answer).

    Held-out names and places are deliberately not in the training text: the
    model meets them as pieces it knows, as it would meet any new word.
    """
    texts = [e.prompt + e.answer for e in babi.generate(n_texts, "train", seed=seed + 1000)]
    return train_bpe_metadata(texts, vocab_size)


class Encoder:
    """Encode/decode with the byte-level BPE described by GGUF tokenizer metadata."""

    def __init__(self, md: dict):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tokens = list(md[TokenizerKey.TOKENS])
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ")) for m in md[TokenizerKey.MERGES]]
        self.tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        self.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tok.decoder = decoders.ByteLevel()
        self.bos = int(md[TokenizerKey.BOS_ID])
        self.eos = int(md[TokenizerKey.EOS_ID])
        self.n_vocab = len(tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no bos)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` and each token's character span `[start, end)` in it."""
        e = self.tok.encode(text, add_special_tokens=False)
        return e.ids, e.offsets

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`."""
        return self.tok.decode(ids)
