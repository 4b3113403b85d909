"""What each KV-cache slot holds, so that a new sequence can reuse a cached prefix.

The model writes K/V rows per (slot, position); this record keeps, per slot, the token ids
whose rows are still valid *as a prefix*: rows 0..len-1 were computed from exactly these
tokens in this order. `Model.forward`, `reset` and `trim` keep it up to date, so nobody
above the model has to trust a side table that a direct `forward` could silently outdate.

Slots are also claimed and released here: a generation claims a slot for its lifetime, and
a new sequence gets the free slot whose record shares the longest prefix with its prompt (a
shared system prompt, the previous turns of a chat) when that is worth it: the slot holds
nothing but a prefix of the prompt, or the shared part is at least half the prompt.
Otherwise it gets an empty slot, or the one released longest ago, so that a shared BOS
token alone does not evict another cached conversation.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence

from ..errors import ModelError, TribitError


class SlotBusyError(TribitError):
    """The requested KV slot is claimed by another generation."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotTable:
    """Per-slot token records and claims of one model's KV cache (thread-safe)."""

    def __init__(self, n_seq: int):
        self._tokens: list[list[int]] = [[] for _ in range(n_seq)]
        self._busy = [False] * n_seq
        self._released = [0] * n_seq  # release order: lower = released longer ago
        self._clock = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def n_seq(self) -> int:
        return len(self._tokens)

    # -- the model's bookkeeping -------------------------------------------------------
    def record(self, tokens: Iterable[int], pos: Iterable[int], seq: Iterable[int]) -> None:
        """Token tokens[i] was written at position pos[i] of slot seq[i], in batch order.

        A write at p invalidates what followed p (those rows were computed on another
        prefix); a write past the record's end (rows the record no longer vouches for in
        between) adds nothing: the record stays a valid prefix.
        """
        with self._lock:
            for t, p, s in zip(tokens, pos, seq, strict=True):
                rec = self._tokens[s]
                if p < len(rec):
                    del rec[p:]
                if p == len(rec):
                    rec.append(int(t))

    def forget_from(self, pos: Iterable[int], seq: Iterable[int]) -> None:
        """A batch failed part-way: rows from its earliest position on may be garbage."""
        with self._lock:
            first: dict[int, int] = {}
            for p, s in zip(pos, seq, strict=True):
                first[s] = min(first.get(s, p), p)
            for s, p in first.items():
                del self._tokens[s][p:]

    def clear(self, seq: int | None = None) -> None:
        with self._lock:
            for s in range(self.n_seq) if seq is None else (seq,):
                self._tokens[s].clear()

    def trim(self, seq: int, n: int) -> None:
        with self._lock:
            del self._tokens[seq][max(0, n) :]

    def tokens(self, seq: int) -> list[int]:
        """The token ids whose K/V rows slot `seq` holds, as a valid prefix (a copy)."""
        with self._lock:
            return list(self._tokens[seq])

    # -- claims ------------------------------------------------------------------------
    def claim(self, prompt: Sequence[int], seq: int | None = None) -> tuple[int, int]:
        """Claim a slot for a new sequence: `seq`, or the free slot sharing the longest
        prefix with `prompt`. Returns (slot, length of the shared prefix)."""
        with self._lock:
            if seq is not None:
                if isinstance(seq, bool) or not 0 <= seq < self.n_seq:
                    raise ModelError(f"sequence {seq!r} out of range [0, {self.n_seq})")
                if self._busy[seq]:
                    raise SlotBusyError(
                        f"sequence slot {seq} is in use by another generation; finish or "
                        f"close it first, or load the model with more slots (n_seq)"
                    )
                best = seq
            else:
                free = [s for s in range(self.n_seq) if not self._busy[s]]
                if not free:
                    raise SlotBusyError(f"all {self.n_seq} sequence slots are in use")
                best = self._choose(free, prompt)
            self._busy[best] = True
            return best, common_prefix(self._tokens[best], prompt)

    def _choose(self, free: list[int], prompt: Sequence[int]) -> int:
        common = {s: common_prefix(self._tokens[s], prompt) for s in free}
        best = max(free, key=lambda s: (common[s], -self._released[s]))
        n = common[best]
        # worth taking: nothing cached is lost (the slot holds a prefix of the prompt), or
        # most of the prompt is reused; a shared BOS alone must not evict a conversation
        if n > 0 and (n == len(self._tokens[best]) or 2 * n >= len(prompt)):
            return best
        empty = [s for s in free if not self._tokens[s]]
        return min(empty or free, key=lambda s: self._released[s])  # else the LRU slot

    def release(self, seq: int) -> None:
        """The slot is free again; its record stays for the next sequence to reuse."""
        with self._lock:
            self._busy[seq] = False
            self._released[seq] = next(self._clock)

    def n_free(self) -> int:
        with self._lock:
            return self._busy.count(False)

    def is_busy(self, seq: int) -> bool:
        with self._lock:
            return self._busy[seq]
