"""The generic pieces of quantization-aware training: the learning-rate schedule, packed
branching sequences and their batches, the loss (weighted next-token cross-entropy plus
optional supervision of attention heads), exact-match scoring, and checkpoints.

What to train on is the caller's: `tribit.train.babi` trains the bAbI demo model with
these (its settings, data, tokenizer and loop).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .model import BitNetConfig, BitNetLM, attention_logits


def lr_at(st: Any, step: int) -> float:
    """Linear warm-up to `st.lr` over `st.warmup` steps, then cosine decay to
    `st.lr * st.min_lr_frac` at `st.steps` (`st`: e.g. `babi.TrainSettings`)."""
    if step < st.warmup:
        return st.lr * (step + 1) / st.warmup
    t = min(1.0, (step - st.warmup) / max(1, st.steps - st.warmup))
    return st.lr * (st.min_lr_frac + (1 - st.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def collate(seqs: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens (b, n) and a mask (b, n-1) of the answer targets
    (the answer tokens and the closing eos), for `exact_match`."""
    n = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), n), pad, dtype=torch.long)
    m = torch.zeros((len(seqs), n - 1), dtype=torch.bool)
    for i, (s, a) in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        m[i, a - 1 : len(s) - 1] = True  # position j predicts token j+1
    return x, m


@dataclass
class Packed:
    """One training sequence: a story read once, then one branch per question.

    Each branch (question, answer, eos) sits at the positions right after the story
    and attends to the story and to itself only, so every branch sees exactly what
    a prompt `story question` followed by its answer would show the model at
    inference. `target[j]` is the token position j must predict (-1: none) and
    `answer[j]` says whether that target is an answer token (or its eos).
    """

    tokens: list[int]
    pos: list[int]
    seg: list[int]  # 0: the story (and bos); i: branch i
    target: list[int]
    answer: list[bool]
    facts: list[tuple[int, int]] = field(default_factory=list)  # (query, key): `fact_rows`


def collate_packed(items: list[Packed], pad: int, prompt_weight: float):
    """Padded batch: tokens, positions (b, n), attention mask (b, n, n), targets
    (b, n; -1 none), loss weights (b, n: 1 for answers, `prompt_weight` else) and
    the supporting-fact rows (r, 3: sequence, query, key)."""
    b, n = len(items), max(len(p.tokens) for p in items)
    x = torch.full((b, n), pad, dtype=torch.long)
    pos = torch.zeros((b, n), dtype=torch.long)
    seg = torch.full((b, n), -1, dtype=torch.long)
    tgt = torch.full((b, n), -1, dtype=torch.long)
    w = torch.zeros((b, n))
    for i, p in enumerate(items):
        k = len(p.tokens)
        x[i, :k], pos[i, :k], seg[i, :k] = (torch.tensor(v) for v in (p.tokens, p.pos, p.seg))
        tgt[i, :k] = torch.tensor(p.target)
        ans = torch.tensor(p.answer)
        w[i, :k] = torch.where(ans, 1.0, prompt_weight)
    w[tgt < 0] = 0.0
    causal = torch.ones((n, n), dtype=torch.bool).tril()
    same = (seg[:, :, None] == seg[:, None, :]) | (seg[:, None, :] == 0)
    mask = (causal & same) | torch.eye(n, dtype=torch.bool)  # padding sees itself
    facts = torch.tensor(
        [(i, q, k) for i, p in enumerate(items) for q, k in p.facts], dtype=torch.long
    ).reshape(-1, 3)
    return x, pos, mask, tgt, w, facts


def packed_loss(
    model: BitNetLM,
    x,
    pos,
    mask,
    tgt,
    w,
    facts=None,
    fact_weight: float = 0.0,
    fact_layer: int | None = None,
    fact_heads: tuple[int, ...] = (0,),
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean cross-entropy over the targets with weight > 0, plus `fact_weight`
    times the supporting-fact loss: the mean negative log attention that the heads
    `fact_heads` of `fact_layer` pay to each row's key. Returns the total and its
    parts (floats)."""
    layer = model.cfg.n_layer // 2 if fact_layer is None else fact_layer
    use_facts = fact_weight > 0 and facts is not None and len(facts) > 0
    h = model.hidden(x, positions=pos, mask=mask, keep_qkv=layer if use_facts else None)
    sel = w > 0
    ce = F.cross_entropy(model.head(h[sel]), tgt[sel], reduction="none")
    loss = (ce * w[sel]).sum() / w[sel].sum()
    parts = {"lm": loss.item()}
    if use_facts:
        fact = -torch.stack(
            [
                attention_logits(model.blocks[layer], hd, facts[:, :2], mask).gather(
                    1, facts[:, 2:]
                )
                for hd in fact_heads
            ]
        ).mean()
        model.blocks[layer].qkv = None
        parts["fact"] = fact.item()
        loss = loss + fact_weight * fact
    return loss, parts


@torch.no_grad()
def exact_match(model: BitNetLM, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per example: are all answer tokens (and the eos) the argmax given the
    correct prefix? This equals greedy exact-answer accuracy."""
    logits = model(x[:, :-1])
    ok = (logits.argmax(-1) == x[:, 1:]) | ~m
    return ok.all(-1)


def save(
    path: Path, model: BitNetLM, opt, step: int, md: dict, cfg: BitNetConfig, st: Any, log: list
) -> None:
    """torch.save of model + optimizer + step (+ tokenizer metadata, config, log)."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "tokenizer": md,
            "config": cfg.as_dict(),
            "settings": asdict(st),
            "log": log,
        },
        tmp,
    )
    tmp.replace(path)
    (path.parent / "log.json").write_text(json.dumps(log, indent=0))


def load_checkpoint(path: Path) -> tuple[BitNetLM, dict]:
    """The model of a checkpoint (eval mode) and the whole checkpoint dict."""
    ck = torch.load(path, weights_only=False)
    model = BitNetLM(BitNetConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck
