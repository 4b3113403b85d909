"""Training loop for the bAbI default model: AdamW with warm-up and cosine decay,
loss on answer tokens only, checkpoints, a tqdm progress bar, seeded.

Determinism: the batch of step `s` is generated from (seed, s) alone in one thread
(pure Python), and torch is seeded once, so a run is reproducible on one machine
and can resume from a checkpoint at the same data position.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import babi
from .model import BitNetConfig, BitNetLM
from .tokenizer import Encoder, build_tokenizer


@dataclass
class TrainSettings:
    """Optimization and data settings (defaults: the shipped babi-tiny model)."""

    steps: int = 1200
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 2
    vocab_size: int = 512
    tasks: tuple[int, ...] = (1, 1, 1, 6, 2, 3)  # task 1 (the seed's) half the time
    # weight of the story tokens in the loss (answer tokens weigh 1): a little
    # next-token prediction on stories, where names and places repeat, teaches
    # the model to copy words it has seen earlier in the context
    # (the shipped model trained 500 steps on answers only, then with weight 0.25)
    prompt_weight: float = 0.25
    prompt_weight_from: int = 500
    pool: int = 8  # batches generated together and bucketed by length
    log_every: int = 25
    eval_every: int = 250
    ckpt_every: int = 250


def lr_at(st: TrainSettings, step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_frac`."""
    if step < st.warmup:
        return st.lr * (step + 1) / st.warmup
    t = min(1.0, (step - st.warmup) / max(1, st.steps - st.warmup))
    return st.lr * (st.min_lr_frac + (1 - st.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def encode_example(enc: Encoder, ex: babi.Example) -> tuple[list[int], int]:
    """Token ids `[bos] prompt answer [eos]` and the index where the answer starts."""
    p = [enc.bos] + enc.encode(ex.prompt)
    return p + enc.encode(ex.answer) + [enc.eos], len(p)


def collate(seqs: list[tuple[list[int], int]], pad: int,
            prompt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens (b, n) and a mask (b, n-1) of the targets to learn:
    the answer tokens and the closing eos (`prompt`: every real token)."""
    n = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), n), pad, dtype=torch.long)
    m = torch.zeros((len(seqs), n - 1), dtype=torch.bool)
    for i, (s, a) in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        m[i, (0 if prompt else a - 1) : len(s) - 1] = True  # position j predicts token j+1
    return x, m


def pool_batches(enc: Encoder, st: TrainSettings, pool_index: int):
    """`st.pool` batches of examples from one seeded draw, bucketed by length so
    padding costs little, in a seeded random order."""
    rng = random.Random(f"train-{st.seed}-{pool_index}")
    seqs = []
    for _ in range(st.pool * st.batch):
        task = rng.choice(st.tasks)
        ex = babi.generate(1, "train", seed=rng.getrandbits(48), tasks=(task,))[0]
        seqs.append(encode_example(enc, ex))
    seqs.sort(key=lambda s: len(s[0]))
    batches = [seqs[i : i + st.batch] for i in range(0, len(seqs), st.batch)]
    rng.shuffle(batches)
    return batches


def answer_loss(model: BitNetLM, x: torch.Tensor, m: torch.Tensor,
                valid: torch.Tensor | None = None, prompt_weight: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the answer targets `m`; with `prompt_weight` > 0 the
    other `valid` targets count with that weight. The head runs on those positions only."""
    h = model.hidden(x[:, :-1])
    if valid is None or prompt_weight <= 0:
        return F.cross_entropy(model.head(h[m]), x[:, 1:][m])
    ce = F.cross_entropy(model.head(h[valid]), x[:, 1:][valid], reduction="none")
    w = torch.where(m[valid], 1.0, prompt_weight)
    return (ce * w).sum() / w.sum()


@torch.no_grad()
def exact_match(model: BitNetLM, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per example: are all answer tokens (and the eos) the argmax given the
    correct prefix? This equals greedy exact-answer accuracy."""
    logits = model(x[:, :-1])
    ok = (logits.argmax(-1) == x[:, 1:]) | ~m
    return ok.all(-1)


def eval_set(enc: Encoder, n: int = 64, seed: int = 12345):
    """A fixed held-out batch per task, for progress reports."""
    return {t: collate([encode_example(enc, e) for e in babi.generate(n, "heldout", seed, (t,))],
                       enc.eos) for t in babi.TASKS}


def train(out_dir: Path, cfg: BitNetConfig, st: TrainSettings, progress: bool = True,
          resume: bool = False, log_file: Path | None = None) -> Path:
    """Train a model on generated bAbI stories; return the checkpoint path
    (`out_dir/model.pt`, also written every `ckpt_every` steps)."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(st.seed)
    torch.set_num_threads(st.threads)
    ckpt_path = out_dir / "model.pt"
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        md, cfg = ck["tokenizer"], BitNetConfig(**ck["config"])
    else:
        ck = None
        md = build_tokenizer(st.vocab_size, st.seed)
        cfg.n_vocab = len(md["tokenizer.ggml.tokens"])
    enc = Encoder(md)
    model = BitNetLM(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": st.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=st.lr, betas=(0.9, 0.95))
    start, log = 0, []
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, log = ck["step"], ck["log"]
    evals = eval_set(enc)
    t0 = time.time() - (log[-1]["s"] if log else 0.0)
    batches: list = []
    bar = tqdm(range(start, st.steps), initial=start, total=st.steps, disable=not progress,
               desc="train", mininterval=5.0)
    for step in bar:
        pool_index, k = divmod(step, st.pool)
        if not batches or k == 0:
            batches = pool_batches(enc, st, pool_index)
        x, m = collate(batches[k], enc.eos)
        pw = st.prompt_weight if step >= st.prompt_weight_from else 0.0
        valid = collate(batches[k], enc.eos, prompt=True)[1] if pw > 0 else None
        for g in opt.param_groups:
            g["lr"] = lr_at(st, step)
        model.train()
        loss = answer_loss(model, x, m, valid, pw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step == st.steps - 1
        if step % st.log_every == 0 or last or (step + 1) % st.eval_every == 0:
            rec = {"step": step, "loss": round(loss.item(), 5), "lr": lr_at(st, step),
                   "s": round(time.time() - t0, 1)}
            if (step + 1) % st.eval_every == 0 or last:
                model.eval()
                rec["heldout_acc"] = {t: round(exact_match(model, *xm).float().mean().item(), 4)
                                      for t, xm in evals.items()}
            log.append(rec)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if (step + 1) % st.ckpt_every == 0 or last:
            save(ckpt_path, model, opt, step + 1, md, cfg, st, log)
    return ckpt_path


def save(path: Path, model: BitNetLM, opt, step: int, md: dict, cfg: BitNetConfig,
         st: TrainSettings, log: list) -> None:
    """torch.save of model + optimizer + step (+ tokenizer metadata, config, log)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "tokenizer": md, "config": cfg.as_dict(), "settings": asdict(st),
                "log": log}, tmp)
    tmp.replace(path)
    (path.parent / "log.json").write_text(json.dumps(log, indent=0))


def load_checkpoint(path: Path) -> tuple[BitNetLM, dict]:
    """The model of a checkpoint (eval mode) and the whole checkpoint dict."""
    ck = torch.load(path, weights_only=False)
    model = BitNetLM(BitNetConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck
