"""The Tokenizer: GGUF `tokenizer.ggml.*` metadata -> encode/decode, as llama.cpp does it.

Two vocabulary kinds: "gpt2" (byte-level BPE, `bpe.py`) and "llama" (SentencePiece, `spm.py`).
Token types (docs/FORMATS.md 3.8): 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE.

Special tokens in text (llama.cpp `tokenizer_st_partition`): USER_DEFINED tokens are always
matched as whole tokens (as in llama.cpp and HF, where they are ordinary added tokens); CONTROL
and UNKNOWN tokens only with `special=True`, so user text that contains `<|eot_id|>` stays
text unless the caller asks otherwise. Longer special tokens are matched first.

End of generation (`eog_ids`): the eos/eot/eom ids of the metadata plus every token whose text is
one llama.cpp treats as an end marker (`<|eot_id|>`, `<|end_of_text|>`, `<|im_end|>`, ...),
which are also forced to CONTROL as llama.cpp does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import FormatError, TribitError
from ..formats.keys import TokenizerKey, TokenType, token_id_key
from .bpe import BpeEncoder, token_text_to_bytes
from .spm import SPACE, SpmEncoder, byte_token_value

# tokenizer.ggml.token_type values (formats.keys.TokenType) as plain ints
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (int(t) for t in TokenType)
MAX_VOCAB = 1 << 24

# token texts llama.cpp treats as end of generation (llama-vocab.cpp), plus SentencePiece's </s>
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "</s>",
    }
)
# first match wins when the metadata has no eot id (llama.cpp's search order)
EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>")
BOS_TEXTS = ("<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>")
EOS_TEXTS = ("<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>")


def _meta_id(md: Mapping[str, object], name: str, n: int) -> int | None:
    key = token_id_key(name)
    v = md.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise FormatError(f"{key} must be an integer, got {type(v).__name__}")
    v = int(v)
    if v == -1 or v == 0xFFFFFFFF:  # "none", as some converters write it
        return None
    if not 0 <= v < n:
        raise FormatError(f"{key} = {v} is outside the vocabulary (0..{n - 1})")
    return v


def _meta_bool(md: Mapping[str, object], key: str, default: bool) -> bool:
    v = md.get(key)
    if v is None:
        return default
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        return bool(v)
    raise FormatError(f"{key} must be a bool, got {type(v).__name__}")


class Tokenizer:
    """Encodes text to token ids and back for one GGUF vocabulary (see module doc)."""

    def __init__(
        self,
        model: str,
        tokens: Sequence[str],
        token_types: Sequence[int] | None = None,
        scores: Sequence[float] | None = None,
        merges: Sequence[str] | None = None,
        pre: str | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        eot_id: int | None = None,
        eom_id: int | None = None,
        unk_id: int | None = None,
        pad_id: int | None = None,
        add_bos: bool | None = None,
        add_eos: bool = False,
        add_space_prefix: bool | None = None,
        chat_template: str | None = None,
    ) -> None:
        if model not in ("gpt2", "llama"):
            raise FormatError(
                f"unsupported tokenizer.ggml.model {model!r}: tribit reads "
                "'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"
            )
        n = len(tokens)
        if not 0 < n <= MAX_VOCAB:
            raise FormatError(f"tokenizer.ggml.tokens has {n} entries (1..{MAX_VOCAB} allowed)")
        for i, t in enumerate(tokens):
            if not isinstance(t, str):
                raise FormatError(f"tokenizer.ggml.tokens[{i}] is not a string")
        self.model = model
        self._tokens = list(tokens)
        if token_types is None:
            types = [NORMAL] * n
            if model == "llama":  # old files without types: recognise byte tokens by their text
                types = [BYTE if byte_token_value(t) is not None else NORMAL for t in tokens]
        else:
            types = [int(x) for x in token_types]
            if len(types) != n:
                raise FormatError(
                    f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens"
                )
            bad = next((i for i, x in enumerate(types) if not 0 <= x <= 6), None)
            if bad is not None:
                raise FormatError(
                    f"tokenizer.ggml.token_type[{bad}] = {types[bad]} is not a token type (0..6)"
                )
        if scores is not None and len(scores) != n:
            raise FormatError(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
        for i, x in enumerate(types):
            if x == BYTE and model == "llama" and byte_token_value(tokens[i]) is None:
                raise FormatError(f"byte token {i} has text {tokens[i]!r}, not <0xNN>")
        # end markers are control tokens whatever the file says (llama.cpp overrides too)
        self.eog_ids: set[int] = set()
        for i, t in enumerate(self._tokens):
            if t in EOG_TEXTS:
                types[i] = CONTROL
                self.eog_ids.add(i)
        self._types = types
        self._id = {t: i for i, t in enumerate(self._tokens)}

        def by_text(names: Iterable[str]) -> int | None:
            return next((self._id[s] for s in names if s in self._id), None)

        if model == "llama":  # SentencePiece defaults (llama.cpp): unk 0, bos 1, eos 2
            bos_id = bos_id if bos_id is not None else (1 if n > 1 else None)
            eos_id = eos_id if eos_id is not None else (2 if n > 2 else None)
            unk_id = unk_id if unk_id is not None else 0
        self.bos_id = bos_id if bos_id is not None else by_text(BOS_TEXTS)
        self.eos_id = eos_id if eos_id is not None else by_text(EOS_TEXTS)
        self.eot_id = eot_id if eot_id is not None else by_text(EOT_TEXTS)
        self.eom_id = eom_id
        self.unk_id = unk_id
        self.pad_id = pad_id
        self.eog_ids |= {i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None}
        self.add_eos = bool(add_eos)
        self.chat_template = chat_template
        if model == "gpt2":
            self._encoder: BpeEncoder | SpmEncoder = BpeEncoder(self._tokens, merges or [], pre)
            self.pre = self._encoder.family
            self.add_bos = (self.pre == "llama3") if add_bos is None else bool(add_bos)
            self.add_space_prefix = False
        else:
            self._encoder = SpmEncoder(self._tokens, scores, self.unk_id)
            self.pre = None
            self.add_bos = True if add_bos is None else bool(add_bos)
            self.add_space_prefix = True if add_space_prefix is None else bool(add_space_prefix)
        # special tokens found in text: longest first, as llama.cpp's partition does
        specials = [
            (t, i)
            for i, t in enumerate(self._tokens)
            if t and types[i] in (CONTROL, USER_DEFINED, UNKNOWN)
        ]
        specials.sort(key=lambda p: (-len(p[0]), p[1]))
        self._specials_all = specials
        self._specials_user = [p for p in specials if types[p[1]] == USER_DEFINED]
        self._pieces: list[bytes | None] = [None] * n

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, metadata: Mapping[str, object]) -> Tokenizer:
        """Build from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`)."""
        model = metadata.get(TokenizerKey.MODEL)
        if model is None:
            raise FormatError("the file has no tokenizer (tokenizer.ggml.model is missing)")
        if not isinstance(model, str):
            raise FormatError("tokenizer.ggml.model must be a string")
        tokens = metadata.get(TokenizerKey.TOKENS)
        if not isinstance(tokens, (list, tuple)):
            raise FormatError("tokenizer.ggml.tokens is missing or not a string array")
        n = len(tokens)
        if not 0 < n <= MAX_VOCAB:
            raise FormatError(f"tokenizer.ggml.tokens has {n} entries (1..{MAX_VOCAB} allowed)")
        types = metadata.get(TokenizerKey.TOKEN_TYPE)
        scores = metadata.get(TokenizerKey.SCORES)
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64).ravel()
            if not np.all(np.isfinite(scores) | np.isneginf(scores)):
                raise FormatError("tokenizer.ggml.scores holds NaN or +inf")
        merges = metadata.get(TokenizerKey.MERGES)
        if merges is not None and not all(isinstance(m, str) for m in merges):
            raise FormatError("tokenizer.ggml.merges must be a string array")
        pre = metadata.get(TokenizerKey.PRE)
        if pre is not None and not isinstance(pre, str):
            raise FormatError("tokenizer.ggml.pre must be a string")
        template = metadata.get(TokenizerKey.CHAT_TEMPLATE)
        if template is not None and not isinstance(template, str):
            raise FormatError("tokenizer.chat_template must be a string")
        has_bos = metadata.get(TokenizerKey.ADD_BOS)
        return cls(
            model,
            list(tokens),
            token_types=None if types is None else np.asarray(types).ravel().tolist(),
            scores=scores,
            merges=list(merges) if merges is not None else None,
            pre=pre,
            bos_id=_meta_id(metadata, "bos", n),
            eos_id=_meta_id(metadata, "eos", n),
            eot_id=_meta_id(metadata, "eot", n),
            eom_id=_meta_id(metadata, "eom", n),
            unk_id=_meta_id(metadata, "unknown", n),
            pad_id=_meta_id(metadata, "padding", n),
            add_bos=None if has_bos is None else _meta_bool(metadata, TokenizerKey.ADD_BOS, True),
            add_eos=_meta_bool(metadata, TokenizerKey.ADD_EOS, False),
            add_space_prefix=_meta_bool(metadata, TokenizerKey.ADD_SPACE_PREFIX, True),
            chat_template=template,
        )

    # -- vocabulary -----------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """Number of tokens."""
        return len(self._tokens)

    @property
    def tokens(self) -> list[str]:
        """Token texts in id order (the GGUF spelling: byte-level or "▁" escaped)."""
        return self._tokens

    def token_type(self, token_id: int) -> int:
        """The token type (1 NORMAL .. 6 BYTE) of an id."""
        return self._types[self._check(token_id)]

    def token_to_id(self, text: str) -> int | None:
        """The id whose GGUF text is exactly `text`, or None."""
        return self._id.get(text)

    def is_special(self, token_id: int) -> bool:
        """True for CONTROL and UNKNOWN tokens (hidden by `decode(skip_special=True)`)."""
        return self._types[self._check(token_id)] in (CONTROL, UNKNOWN)

    def _check(self, token_id: int) -> int:
        i = int(token_id)
        if not 0 <= i < len(self._tokens):
            raise TribitError(
                f"token id {token_id} is outside the vocabulary (0..{len(self._tokens) - 1})"
            )
        return i

    # -- encoding -------------------------------------------------------------------------
    def encode(
        self,
        text: str,
        add_bos: bool | None = True,
        special: bool = False,
        add_eos: bool | None = False,
    ) -> list[int]:
        """Token ids of `text`.

        add_bos: prepend the BOS token (None: as the file says, `add_bos`); add_eos likewise
        appends EOS. special: parse CONTROL token texts such as `<|eot_id|>` into their ids
        (USER_DEFINED tokens are always parsed).
        """
        return self._encode(text, add_bos, special, add_eos)

    def _encode(
        self,
        text: str,
        add_bos: bool | None,
        special: bool,
        add_eos: bool | None,
        restore: Mapping[int, str] | None = None,
    ) -> list[int]:
        """`encode`; `restore` (a str.translate table) is applied to the raw text fragments
        after special tokens are split off (chat.encode_chat: placeholders back to text)."""
        if not isinstance(text, str):
            raise TribitError(f"text to encode must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TribitError(f"text is not valid Unicode ({e.reason} at {e.start})") from None
        add_bos = self.add_bos if add_bos is None else add_bos
        add_eos = self.add_eos if add_eos is None else add_eos
        out: list[int] = []
        if add_bos and self.bos_id is not None:
            out.append(self.bos_id)
        frags = self._partition(text, special)
        if restore:
            frags = [f.translate(restore) if isinstance(f, str) else f for f in frags]
        if self.model == "gpt2":
            raw = [f for f in frags if isinstance(f, str)]
            encoded = iter(self._encoder.encode_batch(raw))
            for f in frags:
                if isinstance(f, str):
                    out.extend(next(encoded))
                else:
                    out.append(f)
        else:
            prev_special = True  # llama.cpp: a space prefix at the start and after specials
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                    prev_special = True
                    continue
                if self.add_space_prefix and prev_special:
                    f = " " + f
                out.extend(self._encoder.encode(f.replace(" ", SPACE)))
                prev_special = False
        if add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    @property
    def control_texts(self) -> list[str]:
        """Texts that only `special=True` parses into ids (CONTROL and UNKNOWN tokens),
        longest first: what user text must never turn into."""
        return [t for t, i in self._specials_all if self._types[i] != USER_DEFINED]

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Split text into raw fragments and special-token ids (llama.cpp's partition)."""
        specials = self._specials_all if special else self._specials_user
        frags: list[str | int] = [text] if text else []
        for s, tid in specials:
            if s not in text:
                continue
            new: list[str | int] = []
            for f in frags:
                if isinstance(f, int) or s not in f:
                    new.append(f)
                    continue
                for j, part in enumerate(f.split(s)):
                    if j:
                        new.append(tid)
                    if part:
                        new.append(part)
            frags = new
        return frags

    # -- decoding -------------------------------------------------------------------------
    def piece(self, token_id: int) -> bytes:
        """The bytes a token stands for (special tokens: their text), without the SPM rule
        that drops the leading space at the start of a text."""
        i = self._check(token_id)
        p = self._pieces[i]
        if p is None:
            t, kind = self._tokens[i], self._types[i]
            if kind == BYTE and byte_token_value(t) is not None:
                p = bytes([byte_token_value(t)])
            elif kind in (CONTROL, UNKNOWN, USER_DEFINED):
                p = t.encode("utf-8")
            elif kind == UNUSED:
                p = b""
            elif self.model == "gpt2":
                p = token_text_to_bytes(t)
            else:
                p = t.replace(SPACE, " ").encode("utf-8")
            self._pieces[i] = p
        return p

    def render(self, token_id: int, skip_special: bool, strip: bool) -> tuple[bytes, bool]:
        """One step of decoding: (bytes, strip-state for the next token).

        `strip` is True where SentencePiece text starts (start of the text, after a special
        token): there the encoder added a space, so the decoder drops it.
        """
        i = self._check(token_id)
        kind = self._types[i]
        if kind in (CONTROL, UNKNOWN, USER_DEFINED):
            p = b"" if skip_special and kind != USER_DEFINED else self.piece(i)
            return p, self.add_space_prefix and kind != UNKNOWN
        p = self.piece(i)
        if strip and p[:1] == b" ":
            p = p[1:]
        return p, False

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """The raw bytes of `ids` (may end inside a UTF-8 character)."""
        strip = self.add_space_prefix
        out = []
        for t in ids:
            p, strip = self.render(t, skip_special, strip)
            out.append(p)
        return b"".join(out)

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 becomes U+FFFD. skip_special hides CONTROL tokens."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (
            f"Tokenizer(model={self.model!r}, pre={self.pre!r}, n_vocab={self.n_vocab}, "
            f"bos={self.bos_id}, eos={self.eos_id}, eot={self.eot_id})"
        )
