"""GGUF tokenizer metadata from a Hugging Face checkpoint directory.

- `tokenizer.json` with a byte-level BPE model -> "gpt2" metadata, as llama.cpp's converter
  (BpeVocab) writes it: tokens in id order, merges as "left right", added special tokens CONTROL
  (other added tokens USER_DEFINED), scores 0 (vocabulary) / -1000 (added), gaps `[PAD<id>]`
  UNUSED. `tokenizer.ggml.pre` from the pre-tokenizer: "llama-bpe" for LLaMA-3's regex (or a
  128256-token vocabulary with `<|begin_of_text|>`), "qwen2", "gpt2" for the plain ByteLevel
  pre-tokenizer, else "default".
- `tokenizer.model` (SentencePiece protobuf, read here without the sentencepiece package) ->
  "llama" metadata: pieces, scores, types, unk/bos/eos/pad ids, add_space_prefix.
- bos/eos/eot/pad ids from tokenizer_config.json, special_tokens_map.json, then config.json and
  generation_config.json; add_bos/add_eos and the chat template from tokenizer_config.json (or
  chat_template.jinja).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..formats.keys import TokenizerKey, token_id_key
from .base import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED

# LLaMA-3 / Qwen2 pre-tokenizer patterns as they appear in tokenizer.json
_LLAMA3_HF = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_HF = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPM_TYPES = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FormatError(f"{path.name} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise FormatError(f"{path.name} must hold a JSON object")
    return data


def _token_content(v: object) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


# -- byte-level BPE (tokenizer.json) ------------------------------------------------------------
def _is_byte_level(spec: dict) -> bool:
    def walk(node: object) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(spec.get("pre_tokenizer")) or walk(spec.get("decoder"))


def guess_pre(spec: dict, tokens: list[str]) -> str:
    """`tokenizer.ggml.pre` for a tokenizer.json (see module doc)."""
    blob = json.dumps(spec.get("pre_tokenizer"))
    patterns = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            pat = node.get("pattern")
            if node.get("type") == "Split" and isinstance(pat, dict):
                patterns.append(pat.get("Regex") or pat.get("String"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec.get("pre_tokenizer"))
    if _LLAMA3_HF in patterns:
        return "llama-bpe"
    if _QWEN2_HF in patterns:
        return "qwen2"
    if len(tokens) >= 128000 and "<|begin_of_text|>" in tokens:
        return "llama-bpe"
    if not patterns and '"use_regex": true' in blob:
        return "gpt-2"  # HF ByteLevel's own regex is GPT-2's (mainline's name for it)
    return "default"


def metadata_from_hf_bpe(spec: dict, pre: str | None = None) -> dict:
    """GGUF tokenizer metadata from a tokenizer.json dict with a byte-level BPE model."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise FormatError(f"expected a BPE tokenizer.json, got model type {model.get('type')!r}")
    vocab = dict(model.get("vocab") or {})
    added = [a for a in spec.get("added_tokens") or [] if isinstance(a, dict)]
    for a in added:
        vocab[a["content"]] = int(a["id"])
    if not vocab:
        raise FormatError("tokenizer.json has an empty vocabulary")
    n = max(vocab.values()) + 1
    if n > 1 << 24 or min(vocab.values()) < 0:
        raise FormatError(f"tokenizer.json token ids out of range (max {n - 1})")
    tokens: list[str | None] = [None] * n
    for s, i in vocab.items():
        tokens[i] = s
    types = [NORMAL] * n
    scores = np.zeros(n, np.float32)
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
            types[i] = UNUSED
    for a in added:
        i = int(a["id"])
        types[i] = CONTROL if a.get("special", True) else USER_DEFINED
        scores[i] = -1000.0
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    toks = [str(t) for t in tokens]
    return {
        TokenizerKey.MODEL: "gpt2",
        TokenizerKey.PRE: pre if pre is not None else guess_pre(spec, toks),
        TokenizerKey.TOKENS: toks,
        TokenizerKey.SCORES: scores,
        TokenizerKey.TOKEN_TYPE: np.array(types, np.int32),
        TokenizerKey.MERGES: merges,
    }


# -- SentencePiece (tokenizer.model) --------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise FormatError("tokenizer.model: truncated or malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of one protobuf message; bytes for wire type 2."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise FormatError("tokenizer.model: truncated fixed64")
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise FormatError("tokenizer.model: a field runs past the end of the file")
            val, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            if pos + 4 > len(buf):
                raise FormatError("tokenizer.model: truncated fixed32")
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise FormatError(f"tokenizer.model: unsupported protobuf wire type {wire}")
        out.append((num, wire, val))
    return out


def _int32(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def read_sentencepiece(path: str | Path) -> dict:
    """Parse a SentencePiece ModelProto: {"pieces": [(text, score, type)], "model_type",
    "unk_id", "bos_id", "eos_id", "pad_id", "byte_fallback", "add_dummy_prefix",
    "remove_extra_whitespaces"}."""
    buf = Path(path).read_bytes()
    pieces: list[tuple[str, float, int]] = []
    info: dict = {
        "model_type": 1,
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": -1,
        "byte_fallback": False,
        "add_dummy_prefix": True,
        "remove_extra_whitespaces": True,
    }
    for num, wire, val in _fields(buf):
        if num == 1 and wire == 2:  # SentencePiece
            text, score, kind = "", 0.0, 1
            for n2, w2, v2 in _fields(val):
                if n2 == 1 and w2 == 2:
                    try:
                        text = v2.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise FormatError(
                            f"tokenizer.model: piece {len(pieces)} is not UTF-8"
                        ) from e
                elif n2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3 and w2 == 0:
                    kind = v2
            if kind not in _SPM_TYPES:
                raise FormatError(f"tokenizer.model: piece {len(pieces)} has type {kind}")
            pieces.append((text, float(score), _SPM_TYPES[kind]))
        elif num == 2 and wire == 2:  # TrainerSpec
            for n2, w2, v2 in _fields(val):
                if w2 != 0:
                    continue
                key = {
                    3: "model_type",
                    35: "byte_fallback",
                    40: "unk_id",
                    41: "bos_id",
                    42: "eos_id",
                    43: "pad_id",
                }.get(n2)
                if key is not None:
                    info[key] = bool(v2) if key == "byte_fallback" else _int32(v2)
        elif num == 3 and wire == 2:  # NormalizerSpec
            for n2, w2, v2 in _fields(val):
                if w2 == 0 and n2 == 3:
                    info["add_dummy_prefix"] = bool(v2)
                elif w2 == 0 and n2 == 4:
                    info["remove_extra_whitespaces"] = bool(v2)
    if not pieces:
        raise FormatError("tokenizer.model has no pieces")
    info["pieces"] = pieces
    return info


def _metadata_from_sentencepiece(path: Path) -> dict:
    sp = read_sentencepiece(path)
    pieces = sp["pieces"]
    n = len(pieces)
    md = {
        TokenizerKey.MODEL: "llama",
        TokenizerKey.PRE: "default",
        TokenizerKey.TOKENS: [p for p, _, _ in pieces],
        TokenizerKey.SCORES: np.array([s for _, s, _ in pieces], np.float32),
        TokenizerKey.TOKEN_TYPE: np.array([t for _, _, t in pieces], np.int32),
        TokenizerKey.ADD_SPACE_PREFIX: bool(sp["add_dummy_prefix"]),
        TokenizerKey.REMOVE_EXTRA_WHITESPACES: bool(sp["remove_extra_whitespaces"]),
    }
    for key, name in (
        ("unk_id", "unknown"),
        ("bos_id", "bos"),
        ("eos_id", "eos"),
        ("pad_id", "padding"),
    ):
        if 0 <= sp[key] < n:
            md[token_id_key(name)] = sp[key]
    return md


def _append_added(md: dict, added: dict[int, tuple[str, bool]]) -> None:
    """Add or retype tokens from added_tokens(.json / _decoder) into SentencePiece metadata."""
    tokens = list(md[TokenizerKey.TOKENS])
    scores = list(md[TokenizerKey.SCORES])
    types = list(md[TokenizerKey.TOKEN_TYPE])
    for i in sorted(added):
        text, special = added[i]
        kind = CONTROL if special else USER_DEFINED
        if i < len(tokens):
            if tokens[i] == text:
                types[i] = kind if types[i] == NORMAL else types[i]
            continue
        while len(tokens) < i:  # a hole in the ids
            tokens.append(f"[PAD{len(tokens)}]")
            scores.append(-1000.0)
            types.append(UNUSED)
        tokens.append(text)
        scores.append(-1000.0)
        types.append(kind)
    md[TokenizerKey.TOKENS] = tokens
    md[TokenizerKey.SCORES] = np.array(scores, np.float32)
    md[TokenizerKey.TOKEN_TYPE] = np.array(types, np.int32)


# -- the whole directory --------------------------------------------------------------------
def tokenizer_metadata_from_hf(hf_dir: str | Path) -> dict:
    """`tokenizer.ggml.*` (+ `tokenizer.chat_template`) metadata for a HF checkpoint dir."""
    d = Path(hf_dir)
    tcfg = _read_json(d / "tokenizer_config.json")
    spec = _read_json(d / "tokenizer.json")
    model_type = (spec.get("model") or {}).get("type")
    added_dec = tcfg.get("added_tokens_decoder") or {}
    if model_type == "BPE" and _is_byte_level(spec):
        md = metadata_from_hf_bpe(spec)
    elif (d / "tokenizer.model").is_file():
        md = _metadata_from_sentencepiece(d / "tokenizer.model")
        added: dict[int, tuple[str, bool]] = {}
        for text, i in _read_json(d / "added_tokens.json").items():
            if isinstance(i, int):
                added[i] = (text, False)
        for k, v in added_dec.items():
            if str(k).isdigit() and _token_content(v) is not None:
                added[int(k)] = (_token_content(v), bool(v.get("special", True)))
        for a in spec.get("added_tokens") or []:
            if isinstance(a, dict) and isinstance(a.get("id"), int):
                added[a["id"]] = (a["content"], bool(a.get("special", True)))
        if added:
            _append_added(md, added)
    elif spec:
        raise FormatError(
            f"tokenizer.json model {model_type!r} is not a byte-level BPE and "
            "there is no tokenizer.model: unsupported tokenizer"
        )
    else:
        raise FormatError(f"{d} has neither tokenizer.json nor tokenizer.model")
    tokens: list[str] = md[TokenizerKey.TOKENS]
    ids = {t: i for i, t in enumerate(tokens)}
    smap = _read_json(d / "special_tokens_map.json")
    cfg = _read_json(d / "config.json")
    gen = _read_json(d / "generation_config.json")

    def set_id(name: str, key: str) -> None:
        for source in (tcfg, smap):  # token texts first (llama.cpp's SpecialVocab order)
            text = _token_content(source.get(f"{key}_token"))
            if text is not None and text in ids:
                md[token_id_key(name)] = ids[text]
                return
        if token_id_key(name) in md:
            return
        for source in (cfg, gen):
            v = source.get(f"{key}_token_id")
            if isinstance(v, list) and v:
                v = v[0]
            if isinstance(v, int) and 0 <= v < len(tokens):
                md[token_id_key(name)] = v
                return

    set_id("bos", "bos")
    set_id("eos", "eos")
    set_id("unknown", "unk")
    set_id("padding", "pad")
    if "<|eot_id|>" in ids:
        md[TokenizerKey.EOT_ID] = ids["<|eot_id|>"]
    else:  # a second end id in generation_config (e.g. [eos, eot])
        eos_ids = gen.get("eos_token_id")
        if isinstance(eos_ids, list):
            rest = [
                i
                for i in eos_ids
                if isinstance(i, int) and 0 <= i < len(tokens) and i != md.get(TokenizerKey.EOS_ID)
            ]
            if rest:
                md[TokenizerKey.EOT_ID] = rest[0]
    for key in ("add_bos_token", "add_eos_token"):
        if isinstance(tcfg.get(key), bool):
            md[TokenizerKey.PREFIX + key] = tcfg[key]
    if TokenizerKey.ADD_BOS not in md:
        post = json.dumps(spec.get("post_processor"))
        bos = md.get(TokenizerKey.BOS_ID)
        md[TokenizerKey.ADD_BOS] = md[TokenizerKey.MODEL] == "llama" or (
            bos is not None and json.dumps(tokens[bos]) in post
        )
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str) and (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str) and template:
        md[TokenizerKey.CHAT_TEMPLATE] = template
    return md
