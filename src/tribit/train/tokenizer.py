"""Training-time encoding: `Encoder` encodes with exactly the byte-level BPE that GGUF
`tokenizer.ggml.*` metadata describes (HF `tokenizers`, fast, for training batches).
The bAbI model's tokenizer is trained by `tribit.train.babi.build_tokenizer`."""

from __future__ import annotations

from ..formats.keys import TokenizerKey


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
