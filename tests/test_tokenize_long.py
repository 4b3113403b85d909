"""Long texts are encoded in windows stitched at checked seams (tokenizer/longword.py): the ids
must equal the whole-text encode exactly, for BPE (HF) and SPM (ours), and the windowed path
must really be taken."""

import math
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tribit.tokenizer import Tokenizer
from tribit.tokenizer.bpe import PRE_REGEXES, BpeEncoder, bytes_to_unicode
from tribit.tokenizer.longword import CHECKED_FAMILIES
from tribit.tokenizer.spm import SPACE, SpmEncoder

ALPHABET = list(bytes_to_unicode().values())  # every byte has a token: nothing is refused
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_merges(rng: random.Random, letters: str, n: int) -> tuple[list[str], list[str]]:
    """Tokens (the byte alphabet + merged ones) and merges over `letters`, dense enough that
    runs of these letters conflict often: repeated results, merges whose parts come later
    (skipped), and tokens that only HF's whole-word lookup can produce."""
    made = list(letters)
    tokens = list(ALPHABET)
    merges = []
    for _ in range(n):
        left, right = rng.choice(made), rng.choice(made)
        if len(left) + len(right) > 6:
            continue
        merges.append(f"{left} {right}")
        if left + right not in made:
            made.append(left + right)
            tokens.append(left + right)
    merges.append("zz qq")  # makes no token: skipped
    tokens.append(letters[:2] * 2)  # reachable only as a whole pre-token (Llama-3 ignore_merges)
    return tokens, merges


def small_bpe(seed: int, letters: str, pre: str, n_merges: int = 60) -> BpeEncoder:
    tokens, merges = random_merges(random.Random(seed), letters, n_merges)
    enc = BpeEncoder(tokens, merges, pre)
    assert enc._long is not None
    enc._long.configure(chunk=40, stride=24, margin=8)  # many windows and seams
    return enc


def word(draw, letters: str, lo: int, hi: int) -> str:
    return draw(st.text(alphabet=letters, min_size=lo, max_size=hi))


# -- BPE -----------------------------------------------------------------------------------
@FAST
@given(
    seed=st.integers(0, 10_000),
    pre=st.sampled_from(["llama-bpe", "gpt2", "default", "qwen2", "falcon", "starcoder"]),
    letters=st.sampled_from(["ab", "aab", "abc"]),
    data=st.data(),
)
def test_bpe_long_words_equal_whole_encode(seed, pre, letters, data):
    enc = small_bpe(seed, letters, pre)
    text = word(data.draw, letters, 48, 400)
    assert enc.encode(text) == enc.encode_whole(text)


RUNS = [  # giant runs of each kind BpeLong cuts (letters, others, spaces, digits)
    "ab",
    "aé中",
    "!.?-'_",
    "!!!$`",
    " \t",
    "  ",
    "12",
    "12٣٤²",
]
EDGES = ["", "\n", "\r\n", " ", "\n ", "'", "x", "1", "!", "é"]  # around a run


def run_part(draw) -> str:
    run = draw(st.sampled_from(RUNS).flatmap(lambda a: st.text(a, min_size=40, max_size=200)))
    return draw(st.sampled_from(EDGES)) + run + draw(st.sampled_from(EDGES))


@FAST
@given(
    seed=st.integers(0, 10_000),
    pre=st.sampled_from(["llama-bpe", "gpt2", "default", "qwen2", "falcon", "starcoder"]),
    data=st.data(),
)
def test_bpe_runs_mixed_with_text_equal_whole_encode(seed, pre, data):
    enc = small_bpe(seed, "ab!.12Ġ", pre)
    parts = data.draw(
        st.lists(
            st.one_of(
                st.composite(lambda draw: run_part(draw))(),
                st.text(alphabet="ab é中ß²Ⅻ1'\n.,!\t", max_size=30),  # text between runs
                st.sampled_from(["'s", "'re", " ", "\r\n", "\n", "  ", "é" * 60, "中文" * 30]),
            ),
            min_size=1,
            max_size=8,
        )
    )
    text = "".join(parts)
    assert enc.encode(text) == enc.encode_whole(text)


CRAFTED_MERGES = ["Ċ Ġ", "Ġ Ġ", "ĠĠ ĠĠ", "ĉ Ġ", "1 2", "12 3", "2 3", "! !", "!! !", "a b", "ab a"]


@pytest.mark.parametrize("pre", ["llama-bpe", "gpt2", "default", "qwen2", "falcon", "starcoder"])
def test_bpe_run_kinds_on_a_crafted_vocabulary(pre):
    """Merges that join a newline to the spaces after it, digits across 3-digit groups, and
    runs of '!': a cut in the wrong place (a whitespace run after a newline, a digit run cut
    off its groups) changes the ids."""
    tokens = ALPHABET + ["ĊĠ", "ĠĠ", "ĠĠĠĠ", "ĉĠ", "12", "123", "23", "!!", "!!!", "ab", "aba"]
    enc = BpeEncoder(tokens, CRAFTED_MERGES, pre)
    enc._long.configure(chunk=40, stride=24, margin=8)
    n = 301
    texts = {
        "x\n" + " " * n + "\n\ny": None,  # spaces after a newline: not cut
        "x\n" + " " * n + "y": None,
        "x " + " " * n + "y": "runs spaces",
        "x " + " \t" * n + "y": "runs spaces",
        "x" + "123" * n + "x": "runs digits",
        "x" + "1" + "123" * n + "x": "runs digits",
        # a digit run after a numeral: its groups of 3 start earlier (single digits and
        # GPT-2's one piece do not care)
        "²" + "123" * n + "x": None if pre in ("llama-bpe", "default", "falcon") else "runs digits",
        "!" * n + "ab": "runs others",
        "ab" * n + "!": "runs letters",
    }
    for text, kind in texts.items():
        enc._long.stats.clear()
        assert enc.encode(text) == enc.encode_whole(text), (pre, text[:12])
        taken = {k for k in enc._long.stats if k.startswith("runs ")}
        if kind is None:
            assert not taken & {"runs spaces", "runs digits"}, (pre, text[:12], taken)
        elif kind != "runs others" or pre not in ("default", "falcon"):
            assert kind in taken, (pre, text[:12], taken)


def test_bpe_seams_are_checked_and_retried():
    """Over many random vocabularies some first cuts are wrong: the seam check refuses them
    and an earlier cut (or, rarely, the whole group) gives the same ids."""
    rng = random.Random(7)
    total = {"seams": 0, "retries": 0, "fallbacks": 0}
    for seed in range(60):
        enc = small_bpe(seed, "ab", "llama-bpe", n_merges=60)
        text = "".join(rng.choice("ab") for _ in range(600))
        assert enc.encode(text) == enc.encode_whole(text), seed
        for k in total:
            total[k] += enc._long.stats[k]
    assert total["seams"] > 500
    assert total["retries"] > 0  # the check is not a formality


def test_bpe_seam_that_never_fits_falls_back_to_the_group():
    rng = random.Random(11)
    fallbacks = 0
    for seed in range(40):
        enc = small_bpe(seed, "ab", "llama-bpe", n_merges=60)
        enc._long.TRIES = 1
        text = "x y " + "".join(rng.choice("ab") for _ in range(600)) + " z"
        assert enc.encode(text) == enc.encode_whole(text), seed
        fallbacks += enc._long.stats["fallbacks"]
    assert fallbacks > 0


def test_bpe_window_sizes_are_checked():
    enc = small_bpe(0, "ab", "llama-bpe")
    with pytest.raises(ValueError):
        enc._long.configure(chunk=40, stride=24, margin=enc._long.max_token_len)  # too short
    with pytest.raises(ValueError):
        enc._long.configure(chunk=40, stride=10, margin=8)


def test_cut_rules_cover_exactly_the_known_families():
    # the soft/hard cut rules were derived for these regexes: a new family must be reviewed
    # (and added to CHECKED_FAMILIES) before it takes the windowed path
    assert set(PRE_REGEXES) == CHECKED_FAMILIES


def test_bpe_unchecked_family_keeps_the_whole_encode(monkeypatch):
    import tribit.tokenizer.bpe as bpe

    monkeypatch.setitem(bpe.PRE_REGEXES, "unchecked", bpe.PRE_REGEXES["gpt2"])
    monkeypatch.setitem(bpe.PRE_ALIASES, "unchecked", "unchecked")
    tokens, merges = random_merges(random.Random(0), "ab", 20)
    enc = BpeEncoder(tokens, merges, "unchecked")
    assert enc._long is None
    assert enc.encode("ab" * 20_000) == enc.encode_whole("ab" * 20_000)


# -- LLaMA-3 (quicktok's vocabulary) ----------------------------------------------------------
@pytest.fixture(scope="module")
def llama3():
    quicktok = pytest.importorskip("quicktok")
    from test_tokenizer import llama3_metadata

    return Tokenizer.from_gguf(llama3_metadata(quicktok.get_encoding("llama3"))), quicktok


def long_texts(n: int) -> dict[str, str]:
    rng = random.Random(n)
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)] + list("のがはをにでアイウカキ")
    english = "The quick brown fox jumps over the lazy dog; it's 42 o'clock, isn't it? "
    return {
        "one letter": "a" * n,
        "random a-z": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)),
        "cjk and mixed letters": "".join(
            rng.choice(cjk) if rng.random() < 0.8 else rng.choice("abéßКиΩ") for _ in range(n)
        ),
        "english": (english * (n // len(english) + 1))[:n],
        "runs inside text": english * 50 + "x" * n + "'s " + "Ab" * n + "!" + english * 50,
        "space then run": " " + "a" * n,
        "punctuation": "".join(rng.choice("!@#$%^&*()-=+[]{};:,.<>/?|~`'") for _ in range(n)),
        "spaces and tabs": "x " + "".join(rng.choice(" \t") for _ in range(n)) + "\ny",
        "spaces after a newline": "x\n" + " " * n + "\n\ny",
        "underscores and dashes": "".join(rng.choice("_-") for _ in range(n)),
        "punctuation then spaces": "!" * n + " " * n + "x",
        "spaced dots": ". " * n,
        "digits": "".join(rng.choice("0123456789") for _ in range(n)) + "x",
        "digits after a numeral": "²" + "7" * n,
    }


WINDOWED = {  # what each text must exercise
    "one letter": "runs letters",
    "random a-z": "runs letters",
    "cjk and mixed letters": "runs letters",
    "runs inside text": "runs letters",
    "space then run": "runs letters",
    "punctuation": "runs others",
    "spaces and tabs": "runs spaces",
    "underscores and dashes": "runs others",
    "punctuation then spaces": "runs spaces",
    "digits": "runs digits",
}


@pytest.mark.parametrize("name", list(long_texts(10)))
def test_llama3_long_texts_take_the_windowed_path(llama3, name):
    tok, quicktok = llama3
    enc = tok._encoder
    text = long_texts(60_000)[name]
    enc._long.stats.clear()
    ids = tok.encode(text, add_bos=False)
    stats = Counter(enc._long.stats)
    assert ids == enc.encode_whole(text)
    assert ids == quicktok.get_encoding("llama3").encode_ordinary(text)
    assert stats["texts"] == 1 and stats.get("fallbacks", 0) == 0
    if name in WINDOWED:  # a giant run: cut, not handed whole to HF
        assert stats[WINDOWED[name]] >= 1, stats
        assert stats["seams"] >= 5 or stats["period_cuts"] == 1, stats


def test_llama3_python_and_hf_letters_disagree(llama3):
    """'²' and 'Ⅻ' are word characters to Python but numbers to HF; U+31350 (Unicode 15) is
    unassigned to Python 3.11 and a letter to newer tables: runs are cut only where HF agrees."""
    tok, _ = llama3
    enc = tok._encoder
    for odd in ["²", "Ⅻ", "\U00031350", "\u0301"]:
        text = "b" * 40_000 + odd + "c" * 40_000 + odd + "a"
        enc._long.stats.clear()
        assert enc.encode(text) == enc.encode_whole(text), repr(odd)
        assert enc._long.stats["seams"] > 0


# -- SPM -----------------------------------------------------------------------------------------
def small_spm(rng: random.Random, letters: str, n: int, ties: bool) -> SpmEncoder:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(letters)
    made = list(letters)
    for _ in range(n):
        t = rng.choice(made) + rng.choice(made)
        if len(t) <= 6 and t not in made:
            made.append(t)
            tokens.append(t)
    # few distinct scores: many ties, broken to the left
    scores = [float(rng.randint(-3, 0)) if ties else -rng.random() for _ in tokens]
    enc = SpmEncoder(tokens, scores, 0)
    enc.stride, enc.margin, enc.min_len = 24, 2, 48  # tiny margin: many wrong first cuts
    return enc


@FAST
@given(
    seed=st.integers(0, 10_000),
    letters=st.sampled_from(["ab", "a▁b", "abc", "中b"]),
    ties=st.booleans(),
    data=st.data(),
)
def test_spm_long_texts_equal_whole_encode(seed, letters, ties, data):
    enc = small_spm(random.Random(seed), letters, 40, ties)
    text = word(data.draw, letters + "é", 48, 400)
    assert enc.encode(text) == enc.encode_whole(text)


def test_spm_seams_are_checked_and_retried():
    rng = random.Random(3)
    seams = retries = 0
    for _ in range(60):
        enc = small_spm(rng, "ab", 60, ties=True)
        text = "".join(rng.choice("ab") for _ in range(600))
        assert enc.encode(text) == enc.encode_whole(text)
        seams += enc.long_stats["seams"]
        retries += enc.long_stats["retries"]
    assert seams > 500 and retries > 0


def test_spm_seam_that_never_fits_falls_back_to_the_whole():
    rng = random.Random(5)
    fallbacks = 0
    for _ in range(40):
        enc = small_spm(rng, "ab", 60, ties=True)
        enc.margin, enc.TRIES = 1, 1
        text = "".join(rng.choice("ab") for _ in range(600))
        assert enc.encode(text) == enc.encode_whole(text)
        fallbacks += enc.long_stats["fallbacks"]
    assert fallbacks > 0


def test_spm_nan_score_keeps_the_whole_encode():
    enc = small_spm(random.Random(0), "ab", 20, ties=False)
    assert enc.long_ok
    bad = SpmEncoder(list(enc.vocab), [math.nan] + enc.scores[1:], 0)
    assert not bad.long_ok
    text = "ab" * 10_000
    assert bad.encode(text) == bad.encode_whole(text)
    assert bad.long_stats["texts"] == 0


def test_spm_tokenizer_takes_the_windowed_path():
    from test_tokenizer import SPM_PIECES, spm_metadata

    tok = Tokenizer.from_gguf(spm_metadata(SPM_PIECES))
    enc = tok._encoder
    text = "hello world " * 2000 + "ab" * 10_000 + "aaaa" * 5000
    ids = tok.encode(text, add_bos=False)
    assert ids == enc.encode_whole(SPACE + text.replace(" ", SPACE))
    assert enc.long_stats["seams"] >= 5 and enc.long_stats["fallbacks"] == 0
    assert tok.decode(ids) == text
