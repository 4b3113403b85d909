"""Incremental detokenization for streaming generation.

A token may end inside a UTF-8 character (byte tokens `<0xF0>` ... of an emoji, or byte-level
BPE pieces that split a CJK character): `StreamDecoder.push` returns only complete characters
and keeps the rest until the next token completes it. Concatenating every `push` and the final
`flush` gives exactly `Tokenizer.decode` of all the ids (invalid sequences become U+FFFD in both).
"""

from __future__ import annotations

import codecs

from .base import Tokenizer


class StreamDecoder:
    """Turns token ids into text pieces, one token at a time, never splitting a character.

    skip_special: hide CONTROL tokens, as `decode(skip_special=True)`.
    at_start: the stream starts a new text, so a SentencePiece leading space is dropped as
    `decode` does; False (default) continues a prompt, where that space is real text
    (" Paris" after "The capital of France is"). Byte-level BPE vocabularies are unaffected.
    """

    def __init__(
        self, tokenizer: Tokenizer, skip_special: bool = False, at_start: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._strip = bool(at_start and tokenizer.add_space_prefix)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (possibly "")."""
        piece, self._strip = self.tokenizer.render(token_id, self.skip_special, self._strip)
        return self._utf8.decode(piece) if piece else ""

    def flush(self) -> str:
        """End of stream: whatever is held back (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)

    def reset(self) -> None:
        """Forget held bytes (for reuse on a new stream that continues a prompt)."""
        self._utf8.reset()
        self._strip = False
