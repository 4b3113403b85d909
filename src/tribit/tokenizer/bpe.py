"""GPT-2 style byte-level BPE (GGUF `tokenizer.ggml.model` = "gpt2"), on HF `tokenizers`.

Text is split by the pre-tokenizer regexes that llama.cpp uses for `tokenizer.ggml.pre`
(each regex refines the pieces of the previous one; unmatched gaps stay pieces), every byte
is mapped to GPT-2's printable "byte-to-unicode" alphabet, and the merges are applied per
piece. The regexes are llama.cpp's (`llm_tokenizer_bpe` in llama-vocab.cpp); HF's Oniguruma
engine runs them, which is what the models were trained with.

When `tokenizer.ggml.pre` is absent (the official bitnet-b1.58-2B-4T GGUF), llama.cpp falls back
to its "default" regex set (four sequential regexes, punctuation runs split off first) and warns
that generation quality will be degraded. tribit instead picks "llama-bpe" when the vocabulary
is LLaMA-3's (it has `<|begin_of_text|>` and >= 128000 tokens: the tokenizer the model was trained
with, identical to HF's), and llama.cpp's "default" otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from ..errors import FormatError, TribitError
from .longword import CHECKED_FAMILIES, BpeLong

# llama.cpp pre-tokenizer regexes, by family (llama-vocab.cpp, `llm_tokenizer_bpe`)
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-2 (and HF's ByteLevel pre-tokenizer: the trailing `|\s+` only names gaps that llama.cpp
# keeps as unmatched pieces anyway, so the split is the same)
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

PRE_REGEXES: dict[str, tuple[str, ...]] = {
    "llama3": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "gpt2": (_GPT2,),
    "starcoder": (r"\p{N}", _GPT2),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"),
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
}

# `tokenizer.ggml.pre` value -> regex family (llama.cpp's table, the BitNet-relevant part)
PRE_ALIASES: dict[str, str] = {
    "default": "default",
    "llama3": "llama3",
    "llama-v3": "llama3",
    "llama-bpe": "llama3",
    "falcon3": "llama3",
    "falcon_e": "llama3",
    "falcon-e": "llama3",
    "falcon-h1": "llama3",
    "pixtral": "llama3",
    "dbrx": "llama3",
    "smaug-bpe": "llama3",
    "chatglm-bpe": "llama3",
    "qwen2": "qwen2",
    "stablelm2": "qwen2",
    "deepseek-r1-qwen": "qwen2",
    "megrez": "qwen2",
    "hunyuan": "qwen2",
    "gpt2": "gpt2",
    "gpt-2": "gpt2",
    "phi-2": "gpt2",
    "mpt": "gpt2",
    "olmo": "gpt2",
    "jais": "gpt2",
    "jina-es": "gpt2",
    "jina-de": "gpt2",
    "jina-v1-en": "gpt2",
    "jina-v2-es": "gpt2",
    "jina-v2-de": "gpt2",
    "trillion": "gpt2",
    "starcoder": "starcoder",
    "refact": "starcoder",
    "command-r": "starcoder",
    "smollm": "starcoder",
    "codeshell": "starcoder",
    "exaone": "starcoder",
    "minerva-7b": "starcoder",
    "falcon": "falcon",
}

# families whose whole pre-token is looked up before merging (llama.cpp `ignore_merges`)
IGNORE_MERGES = {"llama3"}


def pre_family(pre: str | None, tokens: Sequence[str]) -> str:
    """The regex family for a `tokenizer.ggml.pre` value (None: guessed, see module doc)."""
    if pre is None:
        if len(tokens) >= 128000 and "<|begin_of_text|>" in tokens[128000:128010]:
            return "llama3"
        return "default"
    fam = PRE_ALIASES.get(pre.strip().lower())
    if fam is None:
        known = ", ".join(sorted(PRE_ALIASES))
        raise FormatError(f"unsupported tokenizer.ggml.pre {pre!r}; supported: {known}")
    return fam


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """Inverse of `bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def token_text_to_bytes(text: str) -> bytes:
    """Bytes of a byte-level token text; characters outside the alphabet keep their UTF-8."""
    table = unicode_to_bytes()
    out = bytearray()
    for ch in text:
        b = table.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def bytes_to_token_text(data: bytes) -> str:
    """Byte-level token text of raw bytes (inverse of `token_text_to_bytes`)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in data)


class BpeEncoder:
    """Encodes plain text (no special tokens) to ids with a byte-level BPE vocabulary."""

    def __init__(self, tokens: Sequence[str], merges: Sequence[str], pre: str | None) -> None:
        from tokenizers import Regex, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        self.family = pre_family(pre, tokens)
        vocab = {t: i for i, t in enumerate(tokens)}  # duplicates: the last id wins (llama.cpp)
        self.n_skipped_merges = 0
        pairs = []
        for i, m in enumerate(merges):
            cut = m.find(" ", 1)  # the first part may itself start with a space
            if cut < 0:
                raise FormatError(f"tokenizer.ggml.merges[{i}] = {m!r} is not 'left right'")
            left, right = m[:cut], m[cut + 1 :]
            if left not in vocab or right not in vocab or left + right not in vocab:
                # a merge that cannot make a token never yields one (llama.cpp splits such a
                # symbol back up): drop it rather than refuse the file
                self.n_skipped_merges += 1
                continue
            pairs.append((left, right))
        kwargs = {"ignore_merges": True} if self.family in IGNORE_MERGES else {}
        try:
            model = models.BPE(vocab=vocab, merges=pairs, **kwargs)
        except TypeError:  # tokenizers < 0.19 lacks ignore_merges: merges alone (almost same)
            model = models.BPE(vocab=vocab, merges=pairs)
        except Exception as e:  # the Rust side rejects inconsistent vocabularies
            raise FormatError(f"invalid BPE vocabulary: {e}") from e
        self._hf = HFTokenizer(model)
        splits = [
            pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_REGEXES[self.family]
        ]
        self._hf.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        b2u = bytes_to_unicode()
        # bytes with no single-byte token: HF would silently drop them, so refuse the text
        self._missing = bytes(b for b in range(256) if b2u[b] not in vocab)
        # long texts in bounded windows (longword.py says why the ids stay the same); only for
        # the regex families its cut rules were checked against
        self._long: BpeLong | None = None
        if self.family in CHECKED_FAMILIES:
            lens = [len(t) for t in tokens]
            self._long = BpeLong(self._hf, self.family, lens, max(lens, default=1))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (special-token strings are plain text here)."""
        if not text:
            return []
        if self._missing:
            raw = text.encode("utf-8")
            if len(raw.translate(None, self._missing)) != len(raw):
                bad = sorted({f"0x{b:02X}" for b in raw if b in self._missing})
                raise TribitError(
                    f"the vocabulary has no token for byte(s) {', '.join(bad)} of the text"
                )
        if self._long is not None:
            ids = self._long.encode(text)
            if ids is not None:
                return ids
        return self.encode_whole(text)

    def encode_whole(self, text: str) -> list[int]:
        """`encode` in one call into HF (the reference for the long-text path)."""
        # encode_batch, even for one text: it releases the GIL while Rust works (encode holds
        # it: a 4 MB prompt froze every other thread, the server's event loop included)
        return self._hf.encode_batch([text], add_special_tokens=False)[0].ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for several texts (one call into the Rust side, without the GIL)."""
        long = self._long
        if self._missing or (long is not None and any(len(t) >= long.min_len for t in texts)):
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]
