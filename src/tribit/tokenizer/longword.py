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
provably split the same way on both sides, and a long run of one kind (letters, punctuation,
spaces) that the regexes keep as ONE pre-token is cut inside and stitched as above. HF's
`ignore_merges` (Llama-3: the whole pre-token is looked up first) cannot differ: every window's
part of a run and every stitched run are longer than the longest token, and a seam check
that finds t1 + t2 in the vocabulary only refuses that seam.

Preconditions, checked where the encoders are built: the regex family is one whose cut rules
were derived here (`CHECKED_FAMILIES`, else the whole encode); SPM scores hold no NaN (the
merge order must be total); windows are longer than the longest token (`configure`). Bytes
without a token are refused before any of this (HF would drop them).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

# Python's idea of a letter: only proposes cuts; every cut is checked against HF's \p{L}
_PY_LETTER = r"[^\W\d_]"
# a letter before a non-letter, or a non-space before a space (see `BpeLong`'s soft cuts)
_SOFT = re.compile(_PY_LETTER + r"(?=[\W\d_])|\S(?= )")
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


@dataclass(frozen=True)
class RunKind:
    """Characters whose long runs `BpeLong` may cut, for one pre-token regex family."""

    name: str
    hf: str  # the characters, as HF's regex engine (Oniguruma) spells the class
    hf_not: str  # its complement
    py: str  # a character class for Python's `re` (one fast repeat): proposes, `hf` decides
    period: int  # 0: a run is one piece, cut and stitched; p: pieces of p from its start
    not_after: str | None = None  # a run must not follow such a character (HF class)


_LETTERS = RunKind("letters", r"\p{L}", r"\P{L}", r"[^\W\d_]", 0)
_SPACES = RunKind("spaces", r"[^\S\r\n]", r"[\S\r\n]", r"[^\S\r\n]", 0, not_after=r"\s")
# Python's class for punctuation runs holds whitespace too (`_` is a word character, and a
# class cannot subtract): whitespace is cut out again by HF's class, and spaces come first
_OTHERS = RunKind("others", r"[^\s\p{L}\p{N}]", r"[\s\p{L}\p{N}]", r"[\W_]", 0)
_PUNCT = r"\p{P}\$\+<=>\^~\|"  # llama.cpp's first regex of "default" (falcon adds `)
_DIGITS = {
    3: RunKind("digits", r"\p{N}", r"\P{N}", r"\d", 3, not_after=r"\p{N}"),
    1: RunKind("digits", r"\p{N}", r"\P{N}", r"\d", 1),
    0: RunKind("digits", r"\p{N}", r"\P{N}", r"\d", 0),
    "ascii": RunKind("digits", r"[0-9]", r"[^0-9]", r"[0-9]", 3, not_after=r"\p{N}"),
}
# per family (bpe.PRE_REGEXES): what its regexes make of each kind of run (see BpeLong)
RUN_KINDS: dict[str, tuple[RunKind, ...]] = {
    "llama3": (_LETTERS, _SPACES, _OTHERS, _DIGITS[3]),  # \p{N}{1,3}
    "qwen2": (_LETTERS, _SPACES, _OTHERS, _DIGITS[1]),  # \p{N}
    "gpt2": (_LETTERS, _SPACES, _OTHERS, _DIGITS[0]),  # ` ?\p{N}+`: one piece
    "starcoder": (_LETTERS, _SPACES, _OTHERS, _DIGITS[1]),  # \p{N} isolated first
    "default": (
        _LETTERS,
        _SPACES,
        RunKind("punctuation", f"[{_PUNCT}]", f"[^{_PUNCT}]", r"[\W_]", 0),
        _DIGITS["ascii"],  # ...then [0-9]{3} on each \p{N}+ piece
    ),
    "falcon": (
        _LETTERS,
        _SPACES,
        RunKind("punctuation", f"[{_PUNCT}`]", f"[^{_PUNCT}`]", r"[\W_]", 0),
        _DIGITS["ascii"],  # [0-9]{3} on the GPT-2 regex's ` ?\p{N}+` pieces
    ),
}
CHECKED_FAMILIES = frozenset(RUN_KINDS)


class BpeLong:
    r"""Long-text encoding for `BpeEncoder`: bounded windows, ids identical to the whole encode.

    Cuts of the raw text (llama.cpp's regexes run left to right without look-behind, each
    piece is merged on its own, and a cut is only used where the argument below holds for
    every regex of the family):

    - soft cut at p: text[p-1] is a letter and text[p] is not, or text[p-1] is not
      whitespace and text[p] is a space. The piece holding p-1 (a letter, digit or
      punctuation run, or a contraction: every class that can hold text[p-1] stops before
      text[p], and a space only ever starts a piece) ends at p in the text and in text[:p]
      alike; no attempt before it reads past p-1; and the scan of text[p:] is the text's scan
      from p. The first regexes of the multi-regex families (punctuation, digits) end a match
      or split a gap at p, and the GPT-2 regex then splits that gap at p by the same
      argument. So the pieces of text[:p] and text[p:] are exactly the text's pieces:
      encoding the two parts loses nothing.
    - hard cut at h inside a run of one kind with K such characters on each side (letters;
      "others", i.e. not space, letter or digit, or the punctuation of "default"/"falcon";
      spaces and tabs not after a whitespace character, so that no newline lies between the
      whitespace's start and h; GPT-2's digits): the run lies inside ONE piece that only a
      greedy alternative reaches across h (contractions need a letter after the apostrophe,
      `\s*[\r\n]+` finds no newline before h), text[:h] ends with that piece cut at h and
      text[h:] starts with the rest, the scan going on from its end alike. So the pieces are
      the text's with one piece cut at h, and `stitch` joins the halves exactly.
    - period cut in a digit run (not after a digit) at its start + 3m (Llama-3's \p{N}{1,3};
      the [0-9]{3} of "default" and "falcon" for ASCII digits) or anywhere (\p{N} alone):
      a piece boundary whose two sides scan alike; no stitching needed.

    Character classes are decided by HF's own regex engine; Python's `re` only proposes runs.
    """

    CHUNK = 8192  # target characters per plain window
    STRIDE = 8192  # bytes per window inside a giant run
    BATCH = 1 << 18  # characters of plain windows per call into HF
    K = 8  # characters of the run required on both sides of a hard cut
    TRIES = 4

    def __init__(self, hf: Any, family: str, token_lens: Sequence[int], max_token_len: int) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._hf = hf
        self.kinds = RUN_KINDS[family]
        # the same model without a pre-tokenizer: seam checks on byte-level strings
        self._raw = HFTokenizer(hf.model)
        self._tlen = token_lens
        self.max_token_len = max_token_len
        self._classes: dict[str, dict[str, bool]] = {}
        self._splitters: dict[str, Any] = {}
        self._lock = threading.Lock()
        # a kept part ends `margin` bytes before its window's end: room for tokens to settle
        margin = max(256, 2 * max_token_len)
        self.configure(self.CHUNK, max(self.STRIDE, 8 * margin), margin)
        self._compatible = Memo(self._check_pair)
        self.stats: Counter = Counter()

    def configure(self, chunk: int, stride: int, margin: int) -> None:
        """Window sizes: chunk in characters, stride and margin in bytes of a run (tests use
        small ones to make many seams)."""
        # every window's part of a run is longer than any token (a stride of characters, the
        # last one checked in `_stitch_run`): HF's whole-word lookup never applies to it
        if margin <= self.max_token_len or stride < 2 * margin or chunk < 1:
            raise ValueError(f"bad windows: chunk {chunk}, stride {stride}, margin {margin}")
        self.chunk, self.stride, self.margin = chunk, stride, margin
        self.giant = 2 * stride  # shorter runs stay in plain windows
        self.min_len = 2 * chunk
        self._runs = [(k, re.compile(k.py + "+"), re.compile(k.py + "*")) for k in self.kinds]

    # -- character classes ----------------------------------------------------------------
    def _members(self, cls: str, neg: str, chars: set[str]) -> set[str]:
        """Those of `chars` in the HF class `cls` (`neg` its complement), memoized."""
        memo = self._classes.setdefault(cls, {})
        new = [c for c in chars if c not in memo]
        if new:
            from tokenizers import Regex, pre_tokenizers

            split = self._splitters.get(neg)
            if split is None:
                split = pre_tokenizers.Split(Regex(neg + "+"), behavior="removed")
                self._splitters[neg] = split
            s = "".join(new)
            found = set()
            for _, (i, j) in split.pre_tokenize_str(s):  # what is left are members
                found.update(s[i:j])
            with self._lock:
                if len(memo) > _MAX_MEMO:
                    memo.clear()
                memo.update((c, c in found) for c in new)
        return {c for c in chars if memo.get(c, False)}

    def _is_letter(self, c: str) -> bool:
        if c.isascii():
            return c.isalpha()
        return bool(self._members(r"\p{L}", r"\P{L}", {c}))

    def _not_space(self, c: str) -> bool:
        if c.isascii():
            return not c.isspace()  # Python's ASCII whitespace holds HF's (and \x1c-\x1f)
        return not self._members(r"\s", r"\S", {c})

    def _soft_cut(self, text: str, lo: int, hi: int) -> int | None:
        """The first soft cut p with lo <= p < hi, or None."""
        pos = max(lo - 1, 0)
        while True:
            m = _SOFT.search(text, pos, hi)
            if m is None:
                return None
            p = m.end()
            if p >= lo:
                if text[p] == " ":
                    if self._not_space(text[p - 1]):
                        return p
                elif self._is_letter(text[p - 1]) and not self._is_letter(text[p]):
                    return p
            pos = m.end()

    def _giant_runs(self, text: str) -> list[tuple[int, int, RunKind]]:
        """Runs of at least `giant` characters of one kind (HF's classes), in order.

        Such a run holds a whole aligned block of giant/2 characters: blocks are tested with
        one regex repeat each (most fail at their first characters), and only uniform ones
        are widened to their run."""
        out = []
        n, size = len(text), self.giant // 2
        covered = [0] * len(self._runs)  # per kind: where its last widened run ended
        for a in range(0, n - size + 1, size):
            for i, (kind, full, rev) in enumerate(self._runs):
                if a < covered[i] or not full.fullmatch(text, a, a + size):
                    continue
                # the run starts in the block before (which is not uniform for this kind,
                # else it would have been widened there)
                r0 = a - rev.match(text[max(0, a - size) : a][::-1]).end()
                r1 = covered[i] = full.match(text, a).end()
                if r1 - r0 >= self.giant:
                    out += self._verified(text, r0, r1, kind)
                break
        out.sort(key=lambda r: r[0])
        return out

    def _verified(self, text: str, r0: int, r1: int, kind: RunKind) -> list:
        """The parts of a proposed run that HF's class confirms, as (start, end, kind)."""
        run = text[r0:r1]
        if kind is _LETTERS and run.isascii():  # [^\W\d_] is exact on ASCII
            parts = [(r0, r1)]
        else:
            chars = set(run)
            bad = chars - self._members(kind.hf, kind.hf_not, chars)
            if not bad:
                parts = [(r0, r1)]
            else:  # Python and HF disagree on some characters: the long runs between them
                cls = "[^" + "".join(re.escape(c) for c in sorted(bad)) + "]"
                full, rev = re.compile(cls + "+"), re.compile(cls + "*")
                parts, end, size = [], 0, self.giant // 2
                for x in range(0, len(run) - size + 1, size):  # uniform blocks, as above
                    if x >= end and full.fullmatch(run, x, x + size):
                        y = x - rev.match(run[max(0, x - size) : x][::-1]).end()
                        end = full.match(run, x).end()
                        parts.append((r0 + y, r0 + end))
        out = []
        for a, b in parts:
            if b - a < self.giant:
                continue
            guard = kind.not_after
            if guard and a > 0 and self._members(guard, "[^" + guard + "]", {text[a - 1]}):
                continue
            out.append((a, b, kind))
            self.stats["runs " + kind.name] += 1
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
        for r0, r1, kind in [*self._giant_runs(text), (n, n, None)]:
            if r0 < pos:
                continue  # inside the end of the previous group
            while r0 - pos > 2 * self.chunk:
                p = self._soft_cut(text, pos + self.chunk, r0)
                if p is None:
                    break
                plan.append((pos, p, None))
                pos = p
            if kind is None:
                break
            if kind.period:  # piece boundaries inside the run: plain windows
                step = max(kind.period, self.chunk // kind.period * kind.period)
                c = r0 + step
                while c <= r1 - self.K:
                    if c - pos >= self.chunk:
                        plan.append((pos, c, None))
                        pos = c
                    c += step
                self.stats["period_cuts"] += 1
                continue
            b = self._soft_cut(text, r1, n) or n
            plan.append((pos, b, (r0, r1)))
            pos = b
        if pos < n:
            plan.append((pos, n, None))
        out: list[int] = []
        batch: list[str] = []  # plain windows, encoded a few hundred KiB at a time (HF keeps
        size = 0  # every token's string and offsets until the batch returns)

        def flush() -> None:
            nonlocal size
            for e in self._hf.encode_batch(batch, add_special_tokens=False):
                out.extend(e.ids)
            batch.clear()
            size = 0

        for a, b, run in plan:
            if run is None:
                batch.append(text[a:b])
                size += b - a
                if size >= self.BATCH:
                    flush()
                continue
            flush()
            ids = self._stitch_run(text, a, b, *run)
            if ids is None:  # a seam never fit: the group whole (a and b are soft cuts)
                ids = self._hf.encode_batch([text[a:b]], add_special_tokens=False)[0].ids
            out += ids
        flush()
        return out

    def _stitch_run(self, text: str, a: int, b: int, r0: int, r1: int) -> list[int] | None:
        K = self.K
        last = r1 - K  # the latest hard cut
        # windows of about `stride` bytes (HF's cost per byte grows with the word: CJK runs
        # of 3-byte characters get a third of the characters); never under a token's length
        run = text[r0:r1]
        scale = 1.0 if run.isascii() else len(run) / len(run.encode("utf-8"))
        margin = max(2 * K, int(self.margin * scale))
        stride = max(2 * margin, self.max_token_len + 1, int(self.stride * scale))

        def encode(x: int, y: int) -> list[int]:
            return self._hf.encode_batch([text[x:y]], add_special_tokens=False)[0].ids

        def next_end(c: int) -> int:
            return c + stride if c + 2 * stride <= last else b

        def cuts(ids: list[int], x: int, e: int) -> Iterator[tuple[int, int]]:
            lo = max(x, r0) + K  # a hard cut needs K run characters on its left
            hi = e - margin
            top = min(hi + 1, e)
            tail = text[max(lo, hi - 4 * margin) : e]
            raw = None if tail.isascii() else tail.encode("utf-8")  # token lengths are bytes
            back = 0
            k = len(ids)
            while k > 0:
                back += self._tlen[ids[k - 1]]
                k -= 1
                if raw is None:
                    c = e - back
                else:
                    at = len(raw) - back
                    if at < 0:
                        return
                    if 0x80 <= raw[at] < 0xC0:
                        continue  # inside a character: not a place to cut the text
                    c = e - len(raw[at:].decode("utf-8"))
                if c < lo or c < e - len(tail):
                    return
                # a window's part of the run has more bytes than any token (at least a stride
                # of characters; the last one checked here)
                short = r1 - c <= self.max_token_len
                if c < top and not (short and len(text[c:r1].encode()) <= self.max_token_len):
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
