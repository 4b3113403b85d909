"""Tokenizers of GGUF models (byte-level BPE and SentencePiece), streaming detokenization,
chat templates, and builders of `tokenizer.ggml.*` metadata (from HF files or by training).

    tok = Tokenizer.from_gguf(metadata)
    ids = tok.encode("Hello", add_bos=True, special=False)
    text = tok.decode(ids)
    dec = StreamDecoder(tok); pieces = [dec.push(i) for i in ids] + [dec.flush()]
"""

from .base import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, Tokenizer
from .stream import StreamDecoder

__all__ = [
    "Tokenizer",
    "StreamDecoder",
    "NORMAL",
    "UNKNOWN",
    "CONTROL",
    "USER_DEFINED",
    "UNUSED",
    "BYTE",
]
