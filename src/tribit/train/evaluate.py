"""The PyTorch side of `tribit eval babi`: greedy answers from the training-time
forward of a checkpoint, to compare with the runtime question by question."""

from __future__ import annotations

from pathlib import Path

from ..data.babi_eval import Answerer
from ..formats.keys import TokenizerKey
from .tokenizer import Encoder
from .trainer import load_checkpoint


def torch_answerer(ckpt: str | Path, max_tokens: int = 24, threads: int | None = None) -> Answerer:
    """Greedy answerer (`prompt -> text`) running the checkpoint's PyTorch model with
    the training-time forward over the whole sequence for every token, in the
    runtime's arithmetic (`BitNetLM.runtime_math`: float64 attention and norm sums,
    the exported gamma; with float32 SDPA the shipped file disagreed with tribit on 3
    of 1000 near-ties); stops at eos or a newline and returns the text before the newline,
    like `babi_eval.tribit_answerer`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    model, ck = load_checkpoint(Path(ckpt))
    model.runtime_math = True  # the runtime's arithmetic, the exported gamma (BitNetLM)
    enc = Encoder(ck["tokenizer"])
    md = ck["tokenizer"]
    stop = {enc.eos, int(md.get(TokenizerKey.EOT_ID, enc.eos))}

    def answer(prompt: str) -> str:
        out: list[int] = []
        for tok in model.greedy([enc.bos] + enc.encode(prompt), max_tokens, stop, cache=False):
            out.append(tok)
            if "\n" in enc.decode([tok]):
                break
        return enc.decode(out).split("\n", 1)[0]  # the text before the newline, as tribit's

    return answer
