"""Tokenizer time per MiB from 10 KiB to 4 MiB: it must stay flat (issue 17).

A benchmark, not a test:

    python benchmarks/tokenize_scaling.py                  # Llama-3 BPE (quicktok) + SPM
    python benchmarks/tokenize_scaling.py --bpe trained --old

Texts, each cut to the size: (a) one letter repeated, (b) random letters a-z, (c) random
CJK and other letters (no spaces), (d) English prose with spaces (the control); `--more`:
(e) punctuation, (f) digits, (g) spaces and tabs. Encoders:
the Llama-3 byte-level BPE (128k tokens, 280k merges, quicktok's ranks converted as
tests/test_tokenizer.py does; `--bpe trained`: a 32k BPE trained here with Llama-3's
pre-tokenizer) and the SPM encoder with a 32k vocabulary trained here (SentencePiece-style
BPE, score = -rank), both through `Tokenizer`'s encoders. `--old` also times the whole-text
encode that tribit used before (one HF call; one SPM merge over the whole text).

Method: sizes alternate in rounds (a change of machine load hits all sizes alike); each
sample repeats the encode for at least ~0.3 s; the median of `--rounds` samples is reported
as CPU seconds per MiB (`time.process_time`, all threads: what the work costs) and wall
seconds per MiB, with the ratio 4 MiB / 10 KiB. TOKENIZERS_PARALLELISM=false keeps HF on one
thread so both columns measure the algorithm. The CPU line is `tribit info`'s.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = [10 << 10, 100 << 10, 1 << 20, 4 << 20]
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
OTHER_LETTERS = list("abcdéßøКирилΩμέγαのがはをにでアイウカキ")


def stdlib_files(limit: int) -> list[Path]:
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:limit]


def english() -> str:
    """English prose: the docstrings of the standard library's modules."""
    out = []
    for f in stdlib_files(400):
        try:
            tree = ast.parse(f.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    out.append(" ".join(doc.split()))
    return " ".join(out)


def corpus() -> list[str]:
    """Training texts: standard-library sources and a Zipf-distributed CJK text."""
    texts = [f.read_text(errors="replace") for f in stdlib_files(300)]
    rng = random.Random(1)
    weights = [1 / (i + 1) for i in range(len(CJK))]
    texts += ["".join(rng.choices(CJK, weights, k=500)) for _ in range(400)]
    return texts


def make_text(kind: str, n_bytes: int, prose: str) -> str:
    rng = random.Random(n_bytes)
    if kind == "a: one letter":
        return "a" * n_bytes
    if kind == "b: random a-z":
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=n_bytes))
    if kind == "c: CJK/mixed letters":
        out, size = [], 0
        while size < n_bytes:
            c = rng.choice(CJK) if rng.random() < 0.8 else rng.choice(OTHER_LETTERS)
            out.append(c)
            size += len(c.encode())
        return "".join(out)
    if kind == "e: punctuation":
        return "".join(rng.choices("!@#$%^&*()-=+[]{};:,.<>/?|~`'", k=n_bytes))
    if kind == "f: digits":
        return "".join(rng.choices("0123456789", k=n_bytes))
    if kind == "g: spaces and tabs":
        return "".join(rng.choices("    \t", k=n_bytes))
    return (prose * (n_bytes // len(prose) + 1))[:n_bytes]


KINDS = ["a: one letter", "b: random a-z", "c: CJK/mixed letters", "d: English (control)"]
MORE_KINDS = ["e: punctuation", "f: digits", "g: spaces and tabs"]


def trained_bpe(texts: list[str]) -> dict:
    import json

    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HF

    from tribit.tokenizer.bpe import PRE_REGEXES
    from tribit.tokenizer.hf import metadata_from_hf_bpe

    tok = HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_REGEXES["llama3"][0]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=32768,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return metadata_from_hf_bpe(json.loads(tok.to_str()), pre="llama-bpe")


def trained_spm(texts: list[str]):
    from tokenizers import SentencePieceBPETokenizer

    from tribit.tokenizer.spm import SpmEncoder

    t = SentencePieceBPETokenizer()
    t.train_from_iterator(texts, vocab_size=32000, show_progress=False)
    vocab = t.get_vocab()
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    scores = [0.0] * len(tokens)
    for rank, piece in enumerate(sorted(vocab, key=vocab.get)):
        if piece not in tokens:
            tokens.append(piece)
            scores.append(-float(rank))
    return SpmEncoder(tokens, scores, 0)


def sample(fn, text: str) -> tuple[float, float]:
    """CPU and wall seconds of one encode (repeated for at least ~0.3 s)."""
    reps, c0, w0 = 0, time.process_time(), time.perf_counter()
    while True:
        fn(text)
        reps += 1
        if time.perf_counter() - w0 >= 0.3:
            break
    return (time.process_time() - c0) / reps, (time.perf_counter() - w0) / reps


def measure(name: str, fn, prose: str, rounds: int, sizes: list[int], kinds: list[str]) -> None:
    for kind in kinds:
        texts = {n: make_text(kind, n, prose) for n in sizes}
        cpu: dict[int, list[float]] = {n: [] for n in sizes}
        wall: dict[int, list[float]] = {n: [] for n in sizes}
        fn(texts[sizes[0]])  # warm-up
        for _ in range(rounds):
            for n in sizes:
                mib = len(texts[n].encode()) / 2**20
                c, w = sample(fn, texts[n])
                cpu[n].append(c / mib)
                wall[n].append(w / mib)
        med_c = [statistics.median(cpu[n]) for n in sizes]
        med_w = [statistics.median(wall[n]) for n in sizes]
        print(
            f"{name:<14} {kind:<22} cpu s/MiB "
            + " ".join(f"{x:6.3f}" for x in med_c)
            + f"  ratio {med_c[-1] / med_c[0]:4.2f} | wall "
            + " ".join(f"{x:6.3f}" for x in med_w)
            + f"  ratio {med_w[-1] / med_w[0]:4.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bpe", choices=["llama3", "trained"], default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old", action="store_true", help="also time the whole-text encode")
    ap.add_argument("--only", choices=["bpe", "spm"], default=None)
    ap.add_argument("--sizes", type=int, nargs="*", default=SIZES, help="bytes")
    ap.add_argument("--more", action="store_true", help="also punctuation, digits, spaces")
    args = ap.parse_args()
    kinds = KINDS + (MORE_KINDS if args.more else [])

    from tribit.bench.kernels import system_info
    from tribit.tokenizer import Tokenizer
    from tribit.tokenizer.spm import SPACE

    print("cpu:", system_info().get("cpu"))
    print("sizes (bytes):", " ".join(str(n) for n in args.sizes))
    prose = english()
    texts = corpus()
    if args.only != "spm":
        kind = args.bpe
        if kind is None:
            try:
                import quicktok  # noqa: F401

                kind = "llama3"
            except ImportError:
                kind = "trained"
        if kind == "llama3":
            import quicktok

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from test_tokenizer import llama3_metadata

            md = llama3_metadata(quicktok.get_encoding("llama3"))
        else:
            md = trained_bpe(texts)
        enc = Tokenizer.from_gguf(md)._encoder
        print(f"BPE: {kind}, {len(md['tokenizer.ggml.tokens'])} tokens")
        measure("bpe", enc.encode, prose, args.rounds, args.sizes, kinds)
        if args.old:
            measure("bpe whole", enc.encode_whole, prose, 1, args.sizes, kinds)
    if args.only != "bpe":
        spm = trained_spm(texts)
        print(f"SPM: trained, {len(spm.vocab)} tokens")

        def spm_encode(text: str, fn=spm.encode) -> list[int]:
            return fn((" " + text).replace(" ", SPACE))

        measure("spm", spm_encode, prose, args.rounds, args.sizes, kinds)
        if args.old:
            old = spm.encode_whole
            measure(
                "spm whole",
                lambda t: old((" " + t).replace(" ", SPACE)),
                prose,
                1,
                args.sizes,
                kinds,
            )


if __name__ == "__main__":
    main()
