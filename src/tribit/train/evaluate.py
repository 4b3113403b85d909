"""The PyTorch side of `tribit eval babi`: greedy answers from the training-time
forward of a checkpoint, to compare with the runtime question by question."""

from __future__ import annotations

from pathlib import Path

from ..data.babi_eval import Answerer
from .tokenizer import Encoder
from .trainer import load_checkpoint


def torch_answerer(ckpt: str | Path, max_tokens: int = 24, threads: int | None = None) -> Answerer:
    """Greedy answerer (`prompt -> text`) running the checkpoint's PyTorch model with
    the training-time forward over the whole sequence for every token (no KV cache:
    the cached path rounds differently and breaks some near-ties the other way; on the
    shipped file both paths disagree with tribit on 3 of 1000 questions, not the same 3);
    stops at eos or a newline, like `babi_eval.tribit_answerer`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    model, ck = load_checkpoint(Path(ckpt))
    enc = Encoder(ck["tokenizer"])
    md = ck["tokenizer"]
    stop = {enc.eos, int(md.get("tokenizer.ggml.eot_token_id", enc.eos))}

    def answer(prompt: str) -> str:
        out: list[int] = []
        for tok in model.greedy([enc.bos] + enc.encode(prompt), max_tokens, stop, cache=False):
            out.append(tok)
            if "\n" in enc.decode([tok]):
                break
        return enc.decode(out)

    return answer
