"""Exact encoding of long texts in windows of a few KiB, so time per MiB stays flat (issue 17).

HF `tokenizers` merges a whole pre-token with a heap, and a run of letters is ONE pre-token
(Llama-3's regex); `SpmEncoder` has no pre-tokenizer, so a whole fragment is one sequence.
A multi-megabyte run was one working set far larger than the caches: time per MiB grew 2-4x
from 10 KiB to 4 MiB. Here long inputs are encoded in bounded windows and the pieces are
stitched back so that the ids are provably those of the whole encode.

Why stitching is exact. Both encoders run one process: while some adjacent pair of symbols
can merge, merge the pair with the smallest key (rank, position of its left symbol), where
the rank is a function of the two symbols (BPE: the merge's rank in the list HF was given,
skipped merges and duplicate tokens included; SPM: minus the score of the merged token, ties
to the left). HF's `Word::merge_all` and `SpmEncoder._symbols` are exactly that. For it:

- Lemma A. If E(X), X = L + R, has a token boundary at |L|, then E(X) = E(L) + E(R): no merge
  crossed |L|, and each side always held the smallest key among its own pairs.
- Seams (github/rust-gems `bpe`, "compatible pairs"). If E(L) ends with t1, E(R) starts with
  t2 and E(t1 + t2) = [t1, t2], then E(L + R) = E(L) + E(R). Sketch: before a first merge
  across the cut, the spans of t1 and t2 replay the runs that built t1 and t2, interleaved by
  key exactly as in the run on t1 + t2 alone; a crossing merge with the smallest key present
  would then also happen in that run, contradicting E(t1 + t2) = [t1, t2].

So a long sequence is encoded window by window: encode [a, e), keep its tokens up to a token
boundary c at least `margin` before e (Lemma A: they are E([a, c))), encode the next window
from c, and accept c only if the two tokens meeting there are compatible; otherwise try an
earlier boundary (a few times), then give up and let the caller encode the whole as before.
Every accepted seam is checked, so the result is E(whole) whatever the vocabulary does; the
windows only decide how often a seam is retried.

BPE needs the pre-token boundaries too (`BpeLong`): the text is cut where llama.cpp's regexes
provably split the same way on both sides (see `BpeLong`), giant letter runs are stitched as
above, and HF's `ignore_merges` (whole pre-token looked up first) cannot differ: every window
part and every stitched run is longer than the longest token, and a seam check that found
t1 + t2 in the vocabulary only refuses that seam.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

# the pre-token families whose regexes the cut rules below were derived for (bpe.PRE_REGEXES)
CHECKED_FAMILIES = frozenset({"llama3", "qwen2", "gpt2", "starcoder", "falcon", "default"})

# Python's idea of a letter: only proposes cuts; every cut is checked against HF's \p{L}
_PY_LETTER = r"[^\W\d_]"
_SOFT = re.compile(_PY_LETTER + r"(?=[\W\d_])")  # a letter followed by a non-letter
_MAX_MEMO = 1 << 16


def stitch(
    start: int,
    end: int,
    first_end: int,
    encode: Callable[[int, int], list],
    cuts: Callable[[list, int, int], Iterator[tuple[int, int]]],
    compatible: Callable[[Any, Any], bool],
    next_end: Callable[[int], int],
    tries: int,
    stats: Counter,
) -> list | None:
    """The encoding of [start, end) from windows, or None when a seam could not be placed.

    encode(a, e): tokens of the window [a, e). cuts(tokens, a, e): (c, k) pairs, latest first,
    where the window's first k tokens end exactly at position c (c at least a margin before e).
    compatible(t1, t2): E(t1 + t2) == [t1, t2]. next_end(c): where the window from c ends.
    """
    out: list = []
    a, e = start, first_end
    items = encode(a, e)
    stats["windows"] += 1
    while e < end:
        for c, k in islice(cuts(items, a, e), tries):
            e2 = next_end(c)
            nxt = encode(c, e2)
            stats["windows"] += 1
            if k > 0 and nxt and compatible(items[k - 1], nxt[0]):
                stats["seams"] += 1
                out += items[:k]
                a, e, items = c, e2, nxt
                break
            stats["retries"] += 1
        else:
            stats["fallbacks"] += 1
            return None
    out += items
    return out


class Memo:
    """A bounded memo of a pure function of a pair (seam checks repeat: 'aaaa...')."""

    def __init__(self, fn: Callable[[Any, Any], bool]) -> None:
        self._fn = fn
        self._memo: dict[tuple[Any, Any], bool] = {}

    def __call__(self, x: Any, y: Any) -> bool:
        key = (x, y)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= _MAX_MEMO:
                self._memo.clear()
            hit = self._memo[key] = self._fn(x, y)
        return hit


class BpeLong:
    """Long-text encoding for `BpeEncoder`: bounded windows, ids identical to the whole encode.

    Cuts of the raw text, for every family in CHECKED_FAMILIES (llama.cpp's regexes run left to
    right without look-behind, each piece is merged on its own):

    - soft cut at p: text[p-1] is a letter and text[p] is not. The piece holding p-1 (a letter
      run or a contraction) ends at p in the text and in text[:p] alike; no attempt before it
      reads past p-1 (only letter alternatives consume letters, and they then match); and the
      scan of text[p:] is the text's scan from p. The first regexes of the multi-regex families
      (punctuation, digits) never match letters, so p only splits a gap there, and the GPT-2
      regex then splits that gap at p by the same argument. So the pieces of text[:p] and
      text[p:] are exactly the text's pieces: encoding the two parts loses nothing.
    - hard cut at h inside a run of at least K letters on each side: no piece boundary lies
      there (a contraction ends within 3 characters of the run's start), text[:h] ends with the
      run's piece cut at h (a letter alternative is greedy and alone reaches h) and text[h:]
      starts with the rest of it. So the pieces are the text's, with that one piece cut at h,
      and `stitch` joins its two halves exactly.

    Letters are HF's `\\p{L}` (its regex engine decides; Python only proposes).
    """

    CHUNK = 8192  # target characters per plain window
    STRIDE = 8192  # characters per window inside a giant run
    K = 8  # letters required on both sides of a hard cut
    TRIES = 4

    def __init__(self, hf: Any, token_lens: Sequence[int], max_token_len: int) -> None:
        from tokenizers import Regex, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        self._hf = hf
        # the same model without a pre-tokenizer: seam checks on byte-level strings
        self._raw = HFTokenizer(hf.model)
        self._tlen = token_lens
        self.max_token_len = max_token_len
        # a kept part ends `margin` before its window's end: room for a few tokens to settle
        margin = max(512, 4 * max_token_len)
        self.configure(self.CHUNK, max(self.STRIDE, 8 * margin), margin)
        self._not_letters = pre_tokenizers.Split(Regex(r"\P{L}+"), behavior="removed")
        self._letter: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._compatible = Memo(self._check_pair)
        self.stats: Counter = Counter()

    def configure(self, chunk: int, stride: int, margin: int) -> None:
        """Window sizes in characters (tests use small ones to make many seams)."""
        # every window's part of a run is longer than any token (>= margin): HF's whole-word
        # lookup (`ignore_merges`) never applies to it
        if margin <= self.max_token_len or stride < 2 * margin or chunk < 1:
            raise ValueError(f"bad windows: chunk {chunk}, stride {stride}, margin {margin}")
        self.chunk, self.stride, self.margin = chunk, stride, margin
        self.giant = 2 * stride  # shorter letter runs stay in plain windows
        self.min_len = 2 * chunk
        self._runs = re.compile(rf"(?<!{_PY_LETTER}){_PY_LETTER}{{{self.giant},}}")

    # -- letters --------------------------------------------------------------------------
    def _classify(self, chars: set[str]) -> None:
        """Record which of `chars` HF's regex engine calls \\p{L}."""
        new = [c for c in chars if c not in self._letter]
        if not new:
            return
        s = "".join(new)
        letters = set()
        for _, (i, j) in self._not_letters.pre_tokenize_str(s):
            letters.update(s[i:j])
        with self._lock:
            if len(self._letter) > _MAX_MEMO:
                self._letter.clear()
            for c in new:
                self._letter[c] = c in letters

    def _is_letter(self, c: str) -> bool:
        if c.isascii():
            return c.isalpha()
        hit = self._letter.get(c)
        if hit is None:
            self._classify({c})
            hit = self._letter.get(c, False)
        return hit

    def _soft_cut(self, text: str, lo: int, hi: int) -> int | None:
        """The first soft cut p with lo <= p < hi, or None."""
        pos = max(lo - 1, 0)
        while True:
            m = _SOFT.search(text, pos, hi)
            if m is None:
                return None
            p = m.end()
            if p >= lo and self._is_letter(text[p - 1]) and not self._is_letter(text[p]):
                return p
            pos = m.end()

    def _giant_runs(self, text: str) -> list[tuple[int, int]]:
        """Runs of at least `giant` characters that HF calls letters, in order."""
        out = []
        for m in self._runs.finditer(text):
            r0, r1 = m.span()
            run = text[r0:r1]
            if run.isascii():
                out.append((r0, r1))
                continue
            chars = set(run)
            self._classify(chars)
            bad = [c for c in chars if not self._letter.get(c, False)]
            if not bad:
                out.append((r0, r1))
                continue
            # Python and HF disagree on some characters: use the runs between them
            parts = re.compile("[^" + "".join(re.escape(c) for c in bad) + "]+")
            for p in parts.finditer(run):
                if p.end() - p.start() >= self.giant:
                    out.append((r0 + p.start(), r0 + p.end()))
        return out

    # -- encoding -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int] | None:
        """Ids of `text` (as `hf.encode_batch([text])`), or None when it is short."""
        n = len(text)
        if n < self.min_len:
            return None
        self.stats["texts"] += 1
        plan: list[tuple[int, int, tuple[int, int] | None]] = []
        pos = 0
        for r0, r1 in [*self._giant_runs(text), (n, n)]:
            if r0 < pos:
                continue  # inside the end of the previous group
            while r0 - pos > 2 * self.chunk:
                p = self._soft_cut(text, pos + self.chunk, r0)
                if p is None:
                    break
                plan.append((pos, p, None))
                pos = p
            if r0 == n:
                break
            b = self._soft_cut(text, r1, n) or n
            plan.append((pos, b, (r0, r1)))
            pos = b
        if pos < n:
            plan.append((pos, n, None))
        plain = [text[a:b] for a, b, run in plan if run is None]
        encoded = iter(self._hf.encode_batch(plain, add_special_tokens=False))
        out: list[int] = []
        for a, b, run in plan:
            if run is None:
                out += next(encoded).ids
                continue
            ids = self._stitch_run(text, a, b, *run)
            if ids is None:  # a seam never fit: the group whole (a and b are soft cuts)
                ids = self._hf.encode_batch([text[a:b]], add_special_tokens=False)[0].ids
            out += ids
        return out

    def _stitch_run(self, text: str, a: int, b: int, r0: int, r1: int) -> list[int] | None:
        K, stride, margin = self.K, self.stride, self.margin
        last = r1 - K  # the latest hard cut

        def encode(x: int, y: int) -> list[int]:
            return self._hf.encode_batch([text[x:y]], add_special_tokens=False)[0].ids

        def next_end(c: int) -> int:
            return c + stride if c + 2 * stride <= last else b

        def cuts(ids: list[int], x: int, e: int) -> Iterator[tuple[int, int]]:
            lo = max(x, r0) + K  # a hard cut needs K letters on its left within the run
            hi = e - margin
            top = min(hi + 1, e)
            tail = text[max(lo, hi - 4 * margin) : e]
            if tail.isascii():
                chars_at = None
            else:  # byte offset from e -> character position, for this tail only
                chars_at = {}
                nb = 0
                for i in range(len(tail) - 1, -1, -1):
                    nb += len(tail[i].encode("utf-8"))
                    chars_at[nb] = e - (len(tail) - i)
            back = 0
            k = len(ids)
            while k > 0:
                back += self._tlen[ids[k - 1]]
                k -= 1
                c = e - back if chars_at is None else chars_at.get(back)
                if c is None:
                    if back > 4 * len(tail):
                        return
                    continue
                if c < lo or c < e - len(tail):
                    return
                if c < top:
                    yield c, k

        first_end = r0 + stride
        if first_end + stride > last:
            return None
        return stitch(
            a, b, first_end, encode, cuts, self._compatible, next_end, self.TRIES, self.stats
        )

    def _check_pair(self, t1: int, t2: int) -> bool:
        tokens = self._hf.model
        s = tokens.id_to_token(t1) + tokens.id_to_token(t2)
        return self._raw.encode_batch([s], add_special_tokens=False)[0].ids == [t1, t2]
