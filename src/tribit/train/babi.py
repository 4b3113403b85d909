"""The bAbI demo model (the embedded default) and how it is trained: its settings, its
tokenizer, its data (stories packed with several questions, supporting-fact targets)
and its loop: AdamW with warm-up and cosine decay, loss on answer tokens (and, weighted
down, story tokens) plus supporting-fact supervision of one attention head,
checkpoints, a tqdm progress bar, seeded. The generic pieces are `trainer`'s.

Determinism: the batch of step `s` is generated from (seed, s) alone in one thread
(pure Python), and torch is seeded once, so a run is reproducible on one machine
and can resume from a checkpoint at the same data position.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import babi
from ..formats.keys import General, TokenizerKey, Tribit
from ..tokenizer.train import train_bpe_metadata
from .model import BitNetConfig, BitNetLM
from .tokenizer import Encoder
from .trainer import (
    Packed,
    collate,
    collate_packed,
    exact_match,
    lr_at,
    packed_loss,
    save,
)


@dataclass
class TrainSettings:
    """Optimization and data settings (defaults: the shipped babi-tiny model)."""

    steps: int = 6000
    batch: int = 16
    lr: float = 1e-3  # 3e-3 kept the supervised head from learning the lookup
    warmup: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 2
    vocab_size: int = 512
    tasks: tuple[int, ...] = (1, 1, 1, 1, 6, 2, 3)  # task 1 (the seed's) 4 of 7 sequences
    # questions asked about one task-1/6 story in one training sequence: the story is
    # read once and each question branches off it (see `pack_story`)
    questions: int = 3
    # weight of the story tokens in the loss (answer tokens weigh 1): a little
    # next-token prediction on stories, where names and places repeat, teaches
    # the model to copy words it has seen earlier in the context
    prompt_weight: float = 0.25
    prompt_weight_from: int = 0
    # share of packed stories whose questions skip the people in the place named
    # last (`babi.story_questions`), so that recency alone does not answer
    p_not_last: float = 0.0
    # supporting-fact supervision (the strongly supervised setting of the bAbI paper):
    # the heads `fact_heads` of layer `fact_layer` (None: n_layer // 2) are taught, with
    # this loss weight, to look from each position that predicts a piece of a task-1
    # answer's place or its "." (or a task-6 answer) at that piece in the asked person's
    # last move (`fact_rows`)
    fact_weight: float = 1.0
    fact_layer: int | None = None
    fact_heads: tuple[int, ...] = (0,)
    # fine-tune: start from this file's weights and tokenizer (`from_gguf`), not from scratch
    init: str | None = None
    pool: int = 8  # batches generated together and bucketed by length
    log_every: int = 25
    eval_every: int = 250
    ckpt_every: int = 250


def build_tokenizer(vocab_size: int, seed: int = 0, n_texts: int = 6000) -> dict:
    """Train the tokenizer on `n_texts` train-split examples (prompt + answer).

    Held-out names and places are deliberately not in the training text: the
    model meets them as pieces it knows, as it would meet any new word.
    """
    texts = [e.prompt + e.answer for e in babi.generate(n_texts, "train", seed=seed + 1000)]
    return train_bpe_metadata(texts, vocab_size)


def encode_example(enc: Encoder, ex: babi.Example) -> tuple[list[int], int]:
    """Token ids `[bos] prompt answer [eos]` and the index where the answer starts."""
    p = [enc.bos] + enc.encode(ex.prompt)
    return p + enc.encode(ex.answer) + [enc.eos], len(p)


def fact_rows(enc: Encoder, ex: babi.Example) -> list[tuple[int, int]]:
    """Supporting-fact targets of one example as (query, key) token indices into its
    unpacked sequence `[bos] prompt answer eos`: the position that predicts piece m of
    a task-1 answer's place should attend to piece m of that place in the supporting
    sentence (`babi.supporting_place`), and the one that predicts the "." after the
    place, at the "." after it there; the position that predicts a task-6 answer
    (Yes/No), to the place's first piece. Empty for the other tasks."""
    span = babi.supporting_place(ex)
    if span is None:
        return []
    ids, offs = enc.encode_offsets(ex.prompt)
    # the place with the "." that closes its sentence: the "." tells where the word
    # ends (without it the model guessed: "shed" -> "shedow", "laundry" -> "laund")
    key = _word_pieces(offs, span[0], span[1] + 1)
    if ex.task == 6:
        return [(len(ids), 1 + key[0])]
    # " Mary is in the garden.": the place is the last word, then the "."
    aids, aoffs = enc.encode_offsets(ex.answer)
    ans = _word_pieces(aoffs, ex.answer.rindex(" ") + 1, len(ex.answer))
    if [aids[j] for j in ans] != [ids[k] for k in key]:
        raise ValueError(f"the answer's place is not the supporting fact's: {ex}")
    # unpacked indices: bos, the prompt, the answer; position j predicts token j + 1
    return [(len(ids) + j, 1 + k) for j, k in zip(ans, key, strict=True)]


def _word_pieces(offs: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens that spell the word at characters [start, end), with the
    blank before it (" garden", or " ", "ai", "r", ...)."""
    return [j for j, (a, b) in enumerate(offs) if b >= start and a < end]


def pack_story(enc: Encoder, exs: list[babi.Example]) -> Packed:
    """Pack examples that share their story text (`babi.story_questions`) into one
    branching sequence; a single example gives an ordinary causal sequence."""
    story = _common_story(exs)
    base = [enc.bos] + enc.encode(story)
    branches = []
    for ex in exs:
        q = enc.encode(ex.prompt[len(story) :])
        if base + q != [enc.bos] + enc.encode(ex.prompt):  # tokens must not straddle the cut
            return _single(enc, exs[0])
        branches.append((q, enc.encode(ex.answer) + [enc.eos]))
    p = Packed(list(base), list(range(len(base))), [0] * len(base), [], [])
    p.target = list(base[1:]) + [-1]  # the story's last token predicts each branch's start
    p.answer = [False] * len(base)
    for i, ((q, a), ex) in enumerate(zip(branches, exs, strict=True), 1):
        toks = q + a
        at = len(p.tokens) - len(base)  # unpacked index -> packed: the branch follows the story
        p.facts += [(j + at if j >= len(base) else j, k) for j, k in fact_rows(enc, ex)]
        p.tokens += toks
        p.pos += range(len(base), len(base) + len(toks))
        p.seg += [i] * len(toks)
        p.target += toks[1:] + [-1]
        p.answer += [False] * (len(q) - 1) + [True] * len(a) + [False]  # eos predicts nothing
    p.target[len(base) - 1] = branches[0][0][0]
    return p


def _common_story(exs: list[babi.Example]) -> str:
    """The story text before the question (everything up to the last sentence)."""
    cut = exs[0].prompt[: -len("\nAnswer:")].rstrip("?").rfind(". ") + 1
    story = exs[0].prompt[:cut]
    if any(not e.prompt.startswith(story) for e in exs):
        raise ValueError("examples do not share a story")
    return story


def _single(enc: Encoder, ex: babi.Example) -> Packed:
    toks, a = encode_example(enc, ex)
    n = len(toks)
    return Packed(
        toks,
        list(range(n)),
        [0] * n,
        toks[1:] + [-1],
        [j >= a - 1 for j in range(n - 1)] + [False],
        fact_rows(enc, ex),
    )


def pool_batches(enc: Encoder, st: TrainSettings, pool_index: int) -> list[list[Packed]]:
    """`st.pool` batches of training sequences from one seeded draw, bucketed by
    length so padding costs little, in a seeded random order."""
    rng = random.Random(f"train-{st.seed}-{pool_index}")
    p_where = st.tasks.count(1) / max(1, st.tasks.count(1) + st.tasks.count(6))
    seqs = []
    for _ in range(st.pool * st.batch):
        task = rng.choice(st.tasks)
        seed = rng.getrandbits(48)
        if task in (1, 6) and st.questions > 1:
            exs = babi.story_questions(
                "train", seed, st.questions, p_where=p_where, p_not_last=st.p_not_last
            )
        else:
            exs = babi.generate(1, "train", seed=seed, tasks=(task,))
        seqs.append(pack_story(enc, exs))
    seqs.sort(key=lambda p: len(p.tokens))
    batches = [seqs[i : i + st.batch] for i in range(0, len(seqs), st.batch)]
    rng.shuffle(batches)
    return batches


def eval_set(enc: Encoder, n: int = 64, seed: int = 12345):
    """A fixed held-out batch per task, for progress reports; "s1": task 1 of the
    "shapes" split (held-out words of other shapes)."""
    sets = {t: babi.generate(n, "heldout", seed, (t,)) for t in babi.TASKS}
    sets["s1"] = babi.generate(n, "shapes", seed, (1,))
    return {t: collate([encode_example(enc, e) for e in exs], enc.eos) for t, exs in sets.items()}


def train(
    out_dir: Path,
    cfg: BitNetConfig,
    st: TrainSettings,
    progress: bool = True,
    resume: bool = False,
    log_file: Path | None = None,
) -> Path:
    """Train a model on generated bAbI stories; return the checkpoint path
    (`out_dir/model.pt`, also written every `ckpt_every` steps)."""
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(st.seed)
    torch.set_num_threads(st.threads)
    ckpt_path = out_dir / "model.pt"
    init = None
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        md, cfg = ck["tokenizer"], BitNetConfig(**ck["config"])
    elif st.init:  # --init: fine-tune an exported file (its shape and tokenizer)
        from .from_gguf import load_gguf

        ck, (init, md) = None, load_gguf(st.init)
        cfg = init.cfg
    else:
        ck = None
        md = build_tokenizer(st.vocab_size, st.seed)
        cfg.n_vocab = len(md[TokenizerKey.TOKENS])
    enc = Encoder(md)
    model = BitNetLM(cfg)
    if init is not None:
        model.load_state_dict(init.state_dict())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": st.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=st.lr,
        betas=(0.9, 0.95),
    )
    start, log = 0, []
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, log = ck["step"], ck["log"]
    evals = eval_set(enc)
    t0 = time.time() - (log[-1]["s"] if log else 0.0)
    batches: list = []
    bar = tqdm(
        range(start, st.steps),
        initial=start,
        total=st.steps,
        disable=not progress,
        desc="train",
        mininterval=5.0,
    )
    for step in bar:
        pool_index, k = divmod(step, st.pool)
        if not batches or k == 0:
            batches = pool_batches(enc, st, pool_index)
        pw = st.prompt_weight if step >= st.prompt_weight_from else 0.0
        batch = collate_packed(batches[k], enc.eos, pw)
        for g in opt.param_groups:
            g["lr"] = lr_at(st, step)
        model.train()
        loss, parts = packed_loss(
            model,
            *batch,
            fact_weight=st.fact_weight,
            fact_layer=st.fact_layer,
            fact_heads=st.fact_heads,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step == st.steps - 1
        if step % st.log_every == 0 or last or (step + 1) % st.eval_every == 0:
            rec = {
                "step": step,
                "loss": round(loss.item(), 5),
                **{k: round(v, 5) for k, v in parts.items()},
                "lr": lr_at(st, step),
                "s": round(time.time() - t0, 1),
            }
            if (step + 1) % st.eval_every == 0 or last:
                model.eval()
                rec["heldout_acc"] = {
                    t: round(exact_match(model, *xm).float().mean().item(), 4)
                    for t, xm in evals.items()
                }
            log.append(rec)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if (step + 1) % st.ckpt_every == 0 or last:
            save(ckpt_path, model, opt, step + 1, md, cfg, st, log)
    return ckpt_path


def model_metadata() -> dict[str, object]:
    """GGUF metadata that makes a bAbI model usable in chat: its chat template, a
    description and example prompts (shown by the server's web page), and greedy decoding
    as the recommended temperature (llama.cpp's `general.sampling.temp`)."""
    return {
        General.DESCRIPTION: babi.DESCRIPTION,
        TokenizerKey.CHAT_TEMPLATE: babi.CHAT_TEMPLATE,
        Tribit.CHAT_EXAMPLES: list(babi.CHAT_EXAMPLES),
        General.SAMPLING_TEMP: 0.0,
    }
