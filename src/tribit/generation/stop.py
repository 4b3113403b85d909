"""Stop strings in streamed text."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TribitError


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back any tail that could
    still become one (so the stop text itself is never emitted)."""

    def __init__(self, stops: Sequence[str] | str | None):
        if isinstance(stops, str):
            stops = [stops]
        if not all(isinstance(s, str) for s in stops or ()):
            raise TribitError(f"stop must be a string or a list of strings, got {stops!r}")
        self.stops = [s for s in (stops or ()) if s]
        self._buf = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop string was found)."""
        if not self.stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        hold = 0
        for s in self.stops:
            # longest suffix of buf that is a proper prefix of s
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self._buf = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """The held-back text (generation ended without completing a stop string)."""
        out, self._buf = self._buf, ""
        return out
