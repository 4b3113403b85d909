"""LLaMA SentencePiece tokenizer (GGUF `tokenizer.ggml.model` = "llama"), as llama.cpp runs it.

llama.cpp's `llm_tokenizer_spm` is a score-driven merge, not SentencePiece's own code path:
the text (spaces escaped to U+2581 "▁", a "▁" prefixed at the start and after each special
token) is split into UTF-8 characters; repeatedly, among adjacent pairs whose concatenation is a
vocabulary token, the pair whose token has the highest score is merged (ties: the leftmost);
finally each symbol is emitted as its token or, for a character outside the vocabulary, as
byte tokens `<0xNN>` (byte fallback; the unknown token when there is none). Implemented here
in Python: correct over fast (prompts are short; the model dominates).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ..errors import TribitError

SPACE = "\u2581"


def byte_token_value(text: str) -> int | None:
    """The byte of a `<0xNN>` token text, else None."""
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        digits = text[3:5]
        if all(c in "0123456789abcdefABCDEF" for c in digits):
            return int(digits, 16)
    return None


class SpmEncoder:
    """Encodes plain text (no special tokens) with llama.cpp's SPM algorithm."""

    def __init__(
        self, tokens: Sequence[str], scores: Sequence[float] | None, unk_id: int | None
    ) -> None:
        self.vocab = {t: i for i, t in enumerate(tokens)}  # duplicates: the last id wins
        n = len(tokens)
        self.scores = [float(s) for s in scores] if scores is not None else [0.0] * n
        if len(self.scores) != n:
            raise TribitError(f"{len(self.scores)} scores for {n} tokens")
        self.unk_id = unk_id
        self.byte_ids: list[int | None] = []
        for b in range(256):
            tid = self.vocab.get(f"<0x{b:02X}>")
            if tid is None and b < 0x80:  # llama.cpp: fall back to the byte as a 1-char token
                tid = self.vocab.get(chr(b))
            self.byte_ids.append(tid)

    def encode(self, text: str) -> list[int]:
        """Token ids of already-escaped text (spaces as "▁", prefix added by the caller)."""
        if not text:
            return []
        chars = list(text)  # symbols: one per character (a UTF-8 sequence)
        n = len(chars)
        sym = chars[:]  # sym[i]: text of the symbol starting at i ("" once merged away)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []  # (-score, left, right, size)
        vocab, scores = self.vocab, self.scores

        def add_bigram(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            piece = sym[left] + sym[right]
            tid = vocab.get(piece)
            if tid is None:
                return
            heapq.heappush(heap, (-scores[tid], left, right, len(piece)))

        for i in range(n - 1):
            add_bigram(i, i + 1)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            # stale entry: one side was merged since it was queued
            if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != size:
                continue
            if nxt[left] != right:
                continue
            sym[left] += sym[right]
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            add_bigram(prv[left], left)
            add_bigram(left, nxt[left])

        # every merge made a vocabulary token, so a final symbol is a token or a lone character
        # outside the vocabulary (llama.cpp's `resegment` reduces to this): bytes for the latter
        out: list[int] = []
        i = 0
        while i != -1:
            tid = vocab.get(sym[i])
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte(b) for b in sym[i].encode("utf-8"))
            i = nxt[i]
        return out

    def _byte(self, b: int) -> int:
        tid = self.byte_ids[b]
        if tid is None:
            tid = self.unk_id
        if tid is None:
            raise TribitError(f"the vocabulary has no byte token <0x{b:02X}> and no unknown token")
        return tid
