"""LLaMA SentencePiece tokenizer (GGUF `tokenizer.ggml.model` = "llama"), as llama.cpp runs it.

llama.cpp's `llm_tokenizer_spm` is a score-driven merge, not SentencePiece's own code path:
the text (spaces escaped to U+2581 "▁", a "▁" prefixed at the start and after each special
token) is split into UTF-8 characters; repeatedly, among adjacent pairs whose concatenation is a
vocabulary token, the pair whose token has the highest score is merged (ties: the leftmost);
finally each symbol is emitted as its token or, for a character outside the vocabulary, as
byte tokens `<0xNN>` (byte fallback; the unknown token when there is none). Implemented here
in Python: correct over fast (prompts are short; the model dominates). There is no
pre-tokenizer, so a long text is merged in windows of a few KiB stitched at checked seams
(longword.py says why that is exact), which keeps the time per MiB flat.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator, Sequence

from ..errors import TribitError
from .longword import Memo, stitch

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
        # windows for long texts: the merge order must be a total order (no NaN score)
        self.long_ok = not any(math.isnan(s) for s in self.scores)
        self.margin = max(64, 4 * max((len(t) for t in tokens), default=1))
        self.stride = max(self.STRIDE, 8 * self.margin)
        self.min_len = 2 * self.stride
        self.long_stats: Counter = Counter()
        self._compatible = Memo(lambda a, b: self._symbols(a + b) == [a, b])

    STRIDE = 2048  # characters per window of a long text (its heap stays in cache)
    TRIES = 4

    def encode(self, text: str) -> list[int]:
        """Token ids of already-escaped text (spaces as "▁", prefix added by the caller)."""
        if not text:
            return []
        syms = None
        if self.long_ok and len(text) >= self.min_len:
            syms = self._symbols_long(text)
        if syms is None:
            syms = self._symbols(text)
        return self._ids(syms)

    def encode_whole(self, text: str) -> list[int]:
        """`encode` without windows (the reference for the long-text path)."""
        return self._ids(self._symbols(text)) if text else []

    def _symbols_long(self, text: str) -> list[str] | None:
        n, stride, margin = len(text), self.stride, self.margin

        def cuts(syms: list[str], a: int, e: int) -> Iterator[tuple[int, int]]:
            back = 0
            for k in range(len(syms) - 1, 0, -1):
                back += len(syms[k])
                c = e - back
                if c <= a + margin:
                    return
                if back >= margin:
                    yield c, k

        def next_end(c: int) -> int:
            return c + stride if c + 2 * stride <= n else n

        self.long_stats["texts"] += 1
        return stitch(
            0,
            n,
            next_end(0),
            lambda a, e: self._symbols(text[a:e]),
            cuts,
            self._compatible,
            next_end,
            self.TRIES,
            self.long_stats,
        )

    def _symbols(self, text: str) -> list[str]:
        """The merged symbols of `text` (llama.cpp's order: best score, then leftmost)."""
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

        out: list[str] = []
        i = 0
        while i != -1:
            out.append(sym[i])
            i = nxt[i]
        return out

    def _ids(self, syms: list[str]) -> list[int]:
        # every merge made a vocabulary token, so a final symbol is a token or a lone character
        # outside the vocabulary (llama.cpp's `resegment` reduces to this): bytes for the latter
        vocab = self.vocab
        out: list[int] = []
        for s in syms:
            tid = vocab.get(s)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte(b) for b in s.encode("utf-8"))
        return out

    def _byte(self, b: int) -> int:
        tid = self.byte_ids[b]
        if tid is None:
            tid = self.unk_id
        if tid is None:
            raise TribitError(f"the vocabulary has no byte token <0x{b:02X}> and no unknown token")
        return tid
