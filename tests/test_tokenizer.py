"""Tokenizer tests: LLaMA-3 BPE against quicktok (a tiktoken-exact reference), SentencePiece
against hand-checked merges, streaming detokenization, metadata builders (HF files, training)."""

import json
import random
import struct

import numpy as np
import pytest

from tribit.errors import FormatError, TribitError
from tribit.tokenizer import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, StreamDecoder, Tokenizer
from tribit.tokenizer.bpe import bytes_to_token_text, pre_family
from tribit.tokenizer.hf import read_sentencepiece, tokenizer_metadata_from_hf
from tribit.tokenizer.train import train_bpe_metadata

CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces\n\n\ttabs  trailing   ",
    "def f(x):\n    return x**2  # comment\n\nclass A(B):\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "日本語のテキスト、中文文本。한국어 텍스트",
    "emoji 👍🏽 family 👨\u200d👩\u200d👧 flags 🇫🇷🇩🇪 😀😀",
    "numbers 1234567 3.14159 1,000,000 007 12345678901234567890",
    "I'm you're they'll we've she'd IT'S DON'T",
    "MiXeD CaSe\r\nwindows\r\nline   endings\r\n",
    "a" * 200 + " " + "ab" * 50,
    "ünïcödé ñ ß ø Ωμέγα Привет мир مرحبا שלום",
    "\u00a0nbsp\u2003em space\u3000ideographic",
    "x\n\n\ny\n \n  z",
    "   \n  ",
    "<|eot_id|> in plain text <|begin_of_text|>",
    "Math: ∑_{i=1}^{n} i² = n(n+1)/2 ≈ ∞ → ∀x∃y",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@c.org",
    "\u0000\u0001 control \u007f chars \u200b zero width",
    "",
]


# -- LLaMA-3 (quicktok) ------------------------------------------------------------------------
def llama3_metadata(enc) -> dict:
    """GGUF metadata for quicktok's Llama-3 encoding: token bytes -> GPT-2 byte characters;
    ranks -> merges (the standard tiktoken -> HF conversion: every split of a token into two
    tokens, ordered by the token's rank, then the parts' ranks)."""
    n_base = 128000
    raw = [enc.decode_single_token_bytes(i) for i in range(n_base)]
    ranks = {b: i for i, b in enumerate(raw)}
    texts = [bytes_to_token_text(b) for b in raw]
    merges = []
    for tok in raw:  # rank order
        splits = sorted(
            (ranks[tok[:k]], ranks[tok[k:]])
            for k in range(1, len(tok))
            if tok[:k] in ranks and tok[k:] in ranks
        )
        merges.extend(texts[a] + " " + texts[b] for a, b in splits)
    tokens = texts + [""] * (enc.n_vocab - n_base)
    types = [NORMAL] * enc.n_vocab
    for s in enc.special_tokens_set:
        i = enc.encode_single_token(s)
        tokens[i], types[i] = s, CONTROL
    assert all(tokens)
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128001,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{{ BITNET }}",
    }


@pytest.fixture(scope="module")
def qt():
    quicktok = pytest.importorskip("quicktok")
    return quicktok.get_encoding("llama3")


@pytest.fixture(scope="module")
def llama3_md(qt):
    return llama3_metadata(qt)


@pytest.fixture(scope="module")
def llama3(llama3_md):
    return Tokenizer.from_gguf(llama3_md)


def test_llama3_metadata_shape(llama3_md, llama3):
    # the official 2B-4T GGUF has exactly these counts (docs/FORMATS.md 3.8)
    assert len(llama3_md["tokenizer.ggml.tokens"]) == 128256
    assert len(llama3_md["tokenizer.ggml.merges"]) == 280147
    assert llama3.pre == "llama3" and llama3.add_bos
    assert (llama3.bos_id, llama3.eos_id, llama3.eot_id) == (128000, 128001, 128009)
    assert {128001, 128009} <= llama3.eog_ids
    # no tokenizer.ggml.pre (official 2B-4T file): LLaMA-3's regex, not llama.cpp's "default"
    assert pre_family(None, llama3_md["tokenizer.ggml.tokens"]) == "llama3"
    assert pre_family(None, ["a", "b"]) == "default"


@pytest.mark.parametrize("text", CORPUS)
def test_llama3_matches_quicktok(llama3, qt, text):
    ids = llama3.encode(text, add_bos=False)
    assert ids == qt.encode_ordinary(text)
    assert llama3.decode(ids) == text
    assert llama3.decode_bytes(ids) == qt.decode_bytes(ids)


def test_llama3_random_text_matches_quicktok(llama3, qt):
    rng = random.Random(1234)
    alphabet = list("abcXYZ019 \n\t'.,;:!?-_()[]{}<>|/\\\"") + [
        "é",
        "ß",
        "中",
        "文",
        "😀",
        "🏽",
        "\u200d",
        "\r",
        "  ",
        "'s",
    ]
    for _ in range(150):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        assert llama3.encode(text, add_bos=False) == qt.encode_ordinary(text), repr(text)


def test_llama3_special_tokens(llama3, qt):
    text = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|reserved_special_token_7|>"
    assert llama3.encode(text, add_bos=False, special=True) == qt.encode_with_special(text)
    plain = llama3.encode(text, add_bos=False, special=False)
    assert plain == qt.encode_ordinary(text) and 128009 not in plain
    ids = llama3.encode("Hi", add_bos=True)
    assert ids[0] == 128000 and ids[1:] == qt.encode_ordinary("Hi")
    assert llama3.encode("Hi", add_bos=None, add_eos=True)[-1] == 128001
    assert llama3.decode([128000, *ids[1:], 128009]) == "<|begin_of_text|>Hi<|eot_id|>"
    assert llama3.decode([128000, *ids[1:], 128009], skip_special=True) == "Hi"


def test_stream_decoder_llama3(llama3):
    text = "emoji 👍🏽 and 日本語 and 🇫🇷 ok"
    ids = llama3.encode(text, add_bos=False)
    dec = StreamDecoder(llama3)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) + dec.flush() == text == llama3.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
    assert any(p == "" for p in pieces)  # some tokens end inside a character


# -- a trained byte-level BPE (GPT-2 regex), against HF tokenizers -------------------------------
TRAIN_TEXTS = [
    "Mary went to the kitchen. John moved to the garden. Where is Mary? kitchen",
    "Sandra picked up the apple. Daniel dropped the milk in the office.",
    "The quick brown fox jumps over the lazy dog 123 times!",
] * 20


@pytest.fixture(scope="module")
def small_md():
    return train_bpe_metadata(
        TRAIN_TEXTS, 320, special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    )


def test_train_bpe_metadata(small_md):
    again = train_bpe_metadata(
        TRAIN_TEXTS, 320, special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    )
    assert again["tokenizer.ggml.tokens"] == small_md["tokenizer.ggml.tokens"]
    assert again["tokenizer.ggml.merges"] == small_md["tokenizer.ggml.merges"]
    tokens = small_md["tokenizer.ggml.tokens"]
    types = small_md["tokenizer.ggml.token_type"]
    assert small_md["tokenizer.ggml.model"] == "gpt2" and small_md["tokenizer.ggml.pre"] == "gpt-2"
    assert tokens[small_md["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>"
    assert tokens[small_md["tokenizer.ggml.eot_token_id"]] == "<|eot_id|>"
    assert types[small_md["tokenizer.ggml.eos_token_id"]] == CONTROL
    assert len(tokens) == len(types) == len(small_md["tokenizer.ggml.scores"])
    with pytest.raises(TribitError):
        train_bpe_metadata(TRAIN_TEXTS, 100)


def test_trained_bpe_matches_hf(small_md):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers

    tokens = small_md["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ")) for m in small_md["tokenizer.ggml.merges"]]
    hf = HF(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = Tokenizer.from_gguf(small_md)
    for text in CORPUS:
        ids = tok.encode(text, add_bos=False)
        assert ids == hf.encode(text, add_special_tokens=False).ids, repr(text)
        assert tok.decode(ids) == text


def test_special_and_user_defined(small_md):
    md = dict(small_md)
    tokens = list(md["tokenizer.ggml.tokens"]) + ["<tool>"]
    md["tokenizer.ggml.tokens"] = tokens
    md["tokenizer.ggml.token_type"] = np.append(md["tokenizer.ggml.token_type"], USER_DEFINED)
    md["tokenizer.ggml.scores"] = np.append(md["tokenizer.ggml.scores"], 0.0)
    tok = Tokenizer.from_gguf(md)
    eot, tool = md["tokenizer.ggml.eot_token_id"], len(tokens) - 1
    text = "Mary<|eot_id|>John<tool>x"
    with_special = tok.encode(text, add_bos=False, special=True)
    without = tok.encode(text, add_bos=False, special=False)
    assert eot in with_special and eot not in without
    assert tool in with_special and tool in without  # USER_DEFINED: always parsed (llama.cpp)
    assert tok.decode(with_special) == tok.decode(without) == text
    assert tok.decode(with_special, skip_special=True) == "MaryJohn<tool>x"
    assert tok.eot_id in tok.eog_ids and tok.eos_id in tok.eog_ids
    # a longer special wins over a shorter one inside it
    md2 = dict(small_md)
    md2["tokenizer.ggml.tokens"] = list(small_md["tokenizer.ggml.tokens"]) + ["<|eot_id|>x"]
    md2["tokenizer.ggml.token_type"] = np.append(small_md["tokenizer.ggml.token_type"], CONTROL)
    md2.pop("tokenizer.ggml.scores")
    tok2 = Tokenizer.from_gguf(md2)
    assert tok2.encode("<|eot_id|>x", add_bos=False, special=True) == [tok2.n_vocab - 1]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"tokenizer.ggml.model": "rwkv"}, "unsupported tokenizer.ggml.model"),
        ({"tokenizer.ggml.pre": "no-such-pre"}, "unsupported tokenizer.ggml.pre"),
        ({"tokenizer.ggml.bos_token_id": 10**6}, "bos_token_id"),
        ({"tokenizer.ggml.token_type": np.ones(3, np.int32)}, "token_type has 3"),
        ({"tokenizer.ggml.merges": ["Ġ"]}, "merges"),
        ({"tokenizer.ggml.tokens": []}, "tokens"),
        ({"tokenizer.ggml.scores": np.full(3, np.nan)}, "scores"),
    ],
)
def test_bad_metadata_is_format_error(small_md, change, match):
    md = dict(small_md, **change)
    with pytest.raises(FormatError, match=match):
        Tokenizer.from_gguf(md)


def test_merges_that_make_no_token_are_ignored(small_md):
    good = Tokenizer.from_gguf(small_md)
    md = dict(small_md)
    md["tokenizer.ggml.merges"] = ["zzz qqq", "Ġ zzz", *small_md["tokenizer.ggml.merges"]]
    tok = Tokenizer.from_gguf(md)
    assert tok._encoder.n_skipped_merges == 2
    for text in CORPUS[:6]:
        assert tok.encode(text) == good.encode(text)


def test_bad_input_is_tribit_error(small_md):
    tok = Tokenizer.from_gguf(small_md)
    with pytest.raises(TribitError, match="outside the vocabulary"):
        tok.decode([tok.n_vocab])
    with pytest.raises(TribitError, match="not valid Unicode"):
        tok.encode("bad \ud800 surrogate")
    with pytest.raises(TribitError):
        tok.encode(b"bytes")  # type: ignore[arg-type]


# -- SentencePiece (llama.cpp's score-driven merge) --------------------------------------------
def spm_metadata(pieces: dict[str, float], **extra) -> dict:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    for piece, score in pieces.items():
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(score)
    md = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32),
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
    }
    md.update(extra)
    return md


SPM_PIECES = {
    "▁": -1.0,
    "h": -2.0,
    "e": -2.0,
    "l": -2.0,
    "o": -2.0,
    "w": -2.0,
    "r": -2.0,
    "d": -2.0,
    "a": -2.0,
    "b": -2.0,
    "c": -2.0,
    "ll": -4.0,
    "he": -5.0,
    "lo": -6.0,
    "▁h": -7.0,
    "hell": -3.0,
    "hello": -2.5,
    "▁hello": -1.5,
    "▁w": -8.0,
    "or": -9.0,
    "ld": -9.5,
    "▁wor": -10.0,
    "ab": -5.0,
    "bc": -1.0,
    "aa": -1.0,
}


@pytest.fixture(scope="module")
def spm():
    return Tokenizer.from_gguf(spm_metadata(SPM_PIECES))


def pieces(tok, ids):
    return [tok.tokens[i] for i in ids]


def test_spm_hand_checked(spm):
    # ll(-4) -> he(-5) -> hell(-3) -> hello(-2.5) -> ▁hello(-1.5); ▁w, or, ld, ▁wor; no ▁world
    assert pieces(spm, spm.encode("hello world", add_bos=False)) == ["▁hello", "▁wor", "ld"]
    ids = spm.encode("hello world")
    assert ids[0] == 1 and spm.decode(ids) == "<s>hello world"
    assert spm.decode(ids, skip_special=True) == "hello world"
    # the best score merges first, wherever it is: bc(-1) beats ab(-5)
    assert pieces(spm, spm.encode("abc", add_bos=False)) == ["▁", "a", "bc"]
    # equal scores: the leftmost pair first
    assert pieces(spm, spm.encode("aaa", add_bos=False)) == ["▁", "aa", "a"]
    # a space prefix after special tokens too
    assert pieces(spm, spm.encode("<s>hello", add_bos=False, special=True)) == ["<s>", "▁hello"]
    assert pieces(spm, spm.encode("<s>hello", add_bos=False)) == [
        "▁",
        "<0x3C>",
        "<0x73>",
        "<0x3E>",
        "hello",
    ]


def test_spm_byte_fallback_and_round_trip(spm):
    ids = spm.encode("hello €x", add_bos=False)
    assert pieces(spm, ids) == ["▁hello", "▁", "<0xE2>", "<0x82>", "<0xAC>", "<0x78>"]
    for text in ["hello €x", "  two  spaces ", "emoji 😀 ok", "日本", "", "a\nb\tc"]:
        assert spm.decode(spm.encode(text)) == "<s>" + text
        assert spm.decode(spm.encode(text, add_bos=False)) == text


def test_spm_without_byte_tokens_uses_unk():
    md = spm_metadata({"▁": -1.0, "a": -2.0})
    keep = [i for i, t in enumerate(md["tokenizer.ggml.tokens"]) if not t.startswith("<0x")]
    md["tokenizer.ggml.tokens"] = [md["tokenizer.ggml.tokens"][i] for i in keep]
    md["tokenizer.ggml.scores"] = md["tokenizer.ggml.scores"][keep]
    md["tokenizer.ggml.token_type"] = md["tokenizer.ggml.token_type"][keep]
    tok = Tokenizer.from_gguf(md)
    assert pieces(tok, tok.encode("aé", add_bos=False)) == ["▁", "a", "<unk>", "<unk>"]


def test_stream_decoder_spm(spm):
    text = "hello 😀 world"
    ids = spm.encode(text, add_bos=False)
    assert pieces(spm, ids)[2:6] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    dec = StreamDecoder(spm, at_start=True)
    out = [dec.push(i) for i in ids]
    assert out[2:5] == ["", "", ""] and out[5] == "😀"
    assert "".join(out) + dec.flush() == spm.decode(ids) == text
    # continuing a prompt (default): the leading space of the first piece is real text
    cont = StreamDecoder(spm)
    assert "".join(cont.push(i) for i in ids) + cont.flush() == " " + text


def test_stream_decoder_equals_decode_on_random_ids(spm):
    rng = random.Random(7)
    byte_ids = list(range(3, 259))
    for _ in range(200):
        ids = [rng.choice(byte_ids + [1, 2, 259, 270]) for _ in range(rng.randint(0, 12))]
        for skip in (False, True):
            dec = StreamDecoder(spm, skip_special=skip, at_start=True)
            pieces_ = [dec.push(i) for i in ids]
            assert "".join(pieces_) + dec.flush() == spm.decode(ids, skip_special=skip)


# -- metadata from Hugging Face files -----------------------------------------------------------
def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(num: int, wire: int, payload: bytes) -> bytes:
    key = _pb_varint(num << 3 | wire)
    return key + (_pb_varint(len(payload)) + payload if wire == 2 else payload)


def write_sentencepiece(path, pieces_: list[tuple[str, float, int]], pad_id: int = -1) -> None:
    blob = b""
    for text, score, kind in pieces_:
        blob += _pb(
            1,
            2,
            _pb(1, 2, text.encode())
            + _pb(2, 5, struct.pack("<f", score))
            + _pb(3, 0, _pb_varint(kind)),
        )
    trainer = (
        _pb(3, 0, _pb_varint(2))
        + _pb(35, 0, _pb_varint(1))
        + _pb(40, 0, _pb_varint(0))
        + _pb(41, 0, _pb_varint(1))
        + _pb(42, 0, _pb_varint(2))
        + _pb(43, 0, _pb_varint(pad_id & ((1 << 64) - 1)))
    )
    normalizer = _pb(1, 2, b"identity") + _pb(3, 0, _pb_varint(1))
    path.write_bytes(blob + _pb(2, 2, trainer) + _pb(3, 2, normalizer))


def test_hf_sentencepiece(tmp_path):
    sp = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
    sp += [(f"<0x{b:02X}>", 0.0, 6) for b in range(256)]
    sp += [(p, s, 1) for p, s in SPM_PIECES.items()]
    write_sentencepiece(tmp_path / "tokenizer.model", sp)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": True,
                "added_tokens_decoder": {str(len(sp)): {"content": "<pad>", "special": True}},
                "chat_template": "{{ messages[0]['content'] }}",
            }
        )
    )
    info = read_sentencepiece(tmp_path / "tokenizer.model")
    assert info["pad_id"] == -1 and info["byte_fallback"] and info["model_type"] == 2
    md = tokenizer_metadata_from_hf(tmp_path)
    assert md["tokenizer.ggml.model"] == "llama"
    assert md["tokenizer.ggml.tokens"][-1] == "<pad>" and md["tokenizer.ggml.token_type"][-1] == 3
    assert md["tokenizer.ggml.scores"][3 + 256 + 1] == np.float32(-2.0)
    assert md["tokenizer.ggml.bos_token_id"] == 1 and md["tokenizer.ggml.eos_token_id"] == 2
    assert md["tokenizer.chat_template"] == "{{ messages[0]['content'] }}"
    tok = Tokenizer.from_gguf(md)
    ref = Tokenizer.from_gguf(spm_metadata(SPM_PIECES))
    assert tok.encode("hello world €") == ref.encode("hello world €")


def test_hf_byte_level_bpe(tmp_path):
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HF

    hf = HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    hf.train_from_iterator(
        TRAIN_TEXTS,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    md = tokenizer_metadata_from_hf(tmp_path)
    assert md["tokenizer.ggml.pre"] == "gpt-2" and md["tokenizer.ggml.bos_token_id"] == 0
    assert md["tokenizer.ggml.eot_token_id"] == 2 and md["tokenizer.ggml.token_type"][2] == 3
    assert md["tokenizer.ggml.scores"][2] == -1000.0
    tok = Tokenizer.from_gguf(md)
    for text in CORPUS:  # HF always splits its added special tokens out of text
        ids = hf.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, add_bos=False, special=True) == ids

    # the same vocabulary behind LLaMA-3's pre-tokenizer is recognised as llama-bpe
    llama3_regex = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
        r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(llama3_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.save(str(tmp_path / "tokenizer.json"))
    md = tokenizer_metadata_from_hf(tmp_path)
    assert md["tokenizer.ggml.pre"] == "llama-bpe"
    tok = Tokenizer.from_gguf(md)
    for text in CORPUS:  # HF always splits its added special tokens out of text
        ids = hf.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, add_bos=False, special=True) == ids


def test_hf_missing_tokenizer(tmp_path):
    with pytest.raises(FormatError, match="neither"):
        tokenizer_metadata_from_hf(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\xff\xff")
    with pytest.raises(FormatError, match="tokenizer.model"):
        tokenizer_metadata_from_hf(tmp_path)
