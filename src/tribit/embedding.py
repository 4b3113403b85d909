"""Embeddings: texts in, pooled and L2-normalised final-norm hidden states out.

An `EmbeddingBatch` runs any number of sequences together through the model's KV slots,
one `Model.forward(..., hidden=True)` per `step()` (the head is not computed), a prompt
longer than the step's token budget in chunks over several steps; the server's engine
schedules over it exactly as it does over the `BatchGenerator`. `embed` (what
`tribit.Model.embed` calls) is a batch of all the texts, stepped to the end.

Pooling (docs/FORMATS.md 1.6): `last` takes the last token's row (causal models such as
BitNet-embedding and Qwen3-Embedding, whose inputs end with an EOS token), `mean` the mean
of all rows, `cls` the first row, `none` every row (a matrix per text). The file's
`<arch>.pooling_type` decides unless the caller overrides it.

Prompts: a converted checkpoint may carry named input prompts (sentence-transformers'
`prompts`, e.g. a "query" instruction) as `tribit.embedding.prompt.<name>`; `prompt_name`
puts one before every text, as sentence-transformers' `encode(prompt_name=...)` does.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ContextLengthError, ModelError, TribitError
from .formats.keys import TokenizerKey, Tribit

POOLINGS = ("last", "mean", "cls", "none")
DEFAULT_BATCH_TOKENS = 512


class PoolingWarning(UserWarning):
    """The file's pooling is likely not the one the model was trained with."""


def check_pooling(model, pooling: str | None) -> str:
    """The pooling to use: `pooling`, else the file's; TribitError when neither defines one
    tribit can compute."""
    p = pooling if pooling is not None else model.config.pooling
    if p is None:
        raise TribitError(
            "the model defines no pooling (no `pooling_type` in its metadata: a generative "
            "model); pass pooling='last', 'mean' or 'cls' to embed with it anyway"
        )
    if p not in POOLINGS:
        raise TribitError(
            f"pooling must be one of {', '.join(POOLINGS)}, got {p!r}"
            + (" (a reranker's score, not an embedding)" if p == "rank" else "")
        )
    return p


def add_eos(model, pooling: str) -> bool:
    """Whether texts get an EOS token appended: `tokenizer.ggml.add_eos_token` where the file
    says it, else for last-token pooling (the last row must see the whole text and the end
    marker the model was trained with: Qwen3-Embedding's and BitNet-embedding's
    `<|endoftext|>`)."""
    tok = model.tokenizer
    if model.metadata.get(TokenizerKey.ADD_EOS) is not None:
        return bool(tok.add_eos)
    return pooling == "last" and tok.eos_id is not None


def prompts(model) -> dict[str, str]:
    """The file's named input prompts (name -> text put before such an input)."""
    n = len(Tribit.EMBED_PROMPT_PREFIX)
    return {
        k[n:]: v
        for k, v in model.metadata.items()
        if k.startswith(Tribit.EMBED_PROMPT_PREFIX) and isinstance(v, str)
    }


def prompt_text(model, prompt_name: str | None) -> str:
    """The text of the file's prompt `prompt_name` ("" for None); TribitError if the file
    has no such prompt."""
    if prompt_name is None:
        return ""
    known = prompts(model)
    if prompt_name not in known:
        have = ", ".join(sorted(known)) or "none"
        raise TribitError(f"the model has no prompt {prompt_name!r} (its prompts: {have})")
    return known[prompt_name]


def embedding_tokens(model, text: str, pooling: str) -> list[int]:
    """The ids a text is embedded as: BOS as the file says, specials parsed (as llama.cpp's
    llama-embedding), EOS per `add_eos`."""
    return model.tokenizer.encode(text, add_bos=None, special=True, add_eos=add_eos(model, pooling))


@dataclass(eq=False)
class _Seq:
    uid: int
    tokens: list[int]
    pooling: str
    normalize: bool
    slot: int = -1
    fed: int = 0
    acc: np.ndarray | None = None  # last / cls row, or the running sum (mean)
    rows: list[np.ndarray] = field(default_factory=list)  # pooling none


class EmbeddingBatch:
    """Sequences embedded together: `insert` them, `step()` until each is returned."""

    def __init__(self, model, batch_tokens: int = DEFAULT_BATCH_TOKENS):
        if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
            raise TribitError(f"batch_tokens must be a positive integer, got {batch_tokens!r}")
        self.model = model
        self.batch_tokens = batch_tokens
        self._uids = itertools.count()
        self._pending: list[_Seq] = []  # waiting for a slot
        self._active: list[_Seq] = []  # holding a slot
        self.last_step_tokens = 0  # tokens of the last step's forward (0: none ran)

    def insert(self, tokens: Sequence[int], pooling: str, normalize: bool = True) -> int:
        """Queue one sequence of token ids; returns its uid. The ids must be in the
        vocabulary and fit the context (ModelError / ContextLengthError otherwise)."""
        toks = [int(t) for t in tokens]
        if not toks:
            raise TribitError("an input to embed is empty: give at least one token")
        if len(toks) > self.model.n_ctx:
            raise ContextLengthError(len(toks), int(self.model.n_ctx))
        n_vocab = int(self.model.config.n_vocab)
        bad = next((t for t in toks if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise ModelError(f"token id {bad} out of range [0, {n_vocab})")
        if pooling not in POOLINGS:
            raise TribitError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        s = _Seq(next(self._uids), toks, pooling, bool(normalize))
        self._pending.append(s)
        return s.uid

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._active)

    def remove(self, uid: int) -> None:
        """Drop a sequence (its client left); its slot is released."""
        self._pending = [s for s in self._pending if s.uid != uid]
        for s in [s for s in self._active if s.uid == uid]:
            self._active.remove(s)
            self.model.slots.release(s.slot)

    def close(self) -> None:
        for s in list(self._active):
            self.remove(s.uid)
        self._pending.clear()

    def step(self) -> list[tuple[int, np.ndarray | list | BaseException]]:
        """One forward over the active sequences (claiming free slots for pending ones
        first); returns (uid, embedding or the error) of each sequence that finished."""
        slots = self.model.slots
        while self._pending and slots.n_free():
            s = self._pending[0]
            s.slot, _ = slots.claim(s.tokens)
            self._pending.pop(0)
            self._active.append(s)
        self.last_step_tokens = 0
        if not self._active:
            return []
        tok: list[int] = []
        pos: list[int] = []
        seq: list[int] = []
        want: list[bool] = []
        plan: list[tuple[_Seq, int, int]] = []  # (sequence, first, end) fed this step
        budget = self.batch_tokens
        for s in self._active:
            if budget <= 0:
                break
            end = min(len(s.tokens), s.fed + budget)
            for p in range(s.fed, end):
                tok.append(s.tokens[p])
                pos.append(p)
                seq.append(s.slot)
                want.append(
                    s.pooling in ("mean", "none")
                    or (s.pooling == "cls" and p == 0)
                    or (s.pooling == "last" and p == len(s.tokens) - 1)
                )
            plan.append((s, s.fed, end))
            budget -= end - s.fed
        done: list[tuple[int, np.ndarray | list | BaseException]] = []
        self.last_step_tokens = len(tok)
        try:
            h = self.model.forward(tok, pos, seq, logits=want, hidden=True)
        except Exception as e:  # a bad batch or out of memory: the sequences in it fail
            for s, _, _ in plan:
                self._finish(s)
                done.append((s.uid, e))
            return done
        row = 0
        for s, first, end in plan:
            k = (
                (end - first)
                if s.pooling in ("mean", "none")
                else int(
                    (s.pooling == "cls" and first == 0)
                    or (s.pooling == "last" and end == len(s.tokens))
                )
            )
            rows = h[row : row + k]
            row += k
            if s.pooling == "mean":
                part = rows.astype(np.float64).sum(axis=0)
                s.acc = part if s.acc is None else s.acc + part
            elif s.pooling == "none":
                s.rows.append(rows)
            elif k:
                s.acc = rows[0].astype(np.float64)
            s.fed = end
            if end == len(s.tokens):
                self._finish(s)
                done.append((s.uid, self._pooled(s)))
        return done

    def _finish(self, s: _Seq) -> None:
        self._active.remove(s)
        self.model.slots.release(s.slot)

    @staticmethod
    def _pooled(s: _Seq) -> np.ndarray:
        if s.pooling == "none":
            out = np.concatenate(s.rows).astype(np.float64)
        elif s.pooling == "mean":
            out = s.acc / len(s.tokens)
        else:
            out = s.acc
        if s.normalize:
            norm = np.linalg.norm(out, axis=-1, keepdims=True)
            out = out / np.maximum(norm, 1e-12)
        return out.astype(np.float32)


def embed(
    model,
    texts: str | Sequence[str] | Sequence[Sequence[int]],
    pooling: str | None = None,
    normalize: bool = True,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    prompt_name: str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Embeddings of `texts` (a string, strings, or lists of token ids used as given):
    float32 (n, n_embd), L2-normalised unless `normalize=False`; with pooling "none" a
    list of (n_tokens, n_embd) arrays instead. Several texts share each forward (one KV
    slot each, as many as are free); `batch_tokens` caps the tokens of one forward.
    `prompt_name`: the file's prompt of that name goes before every string."""
    p = check_pooling(model, pooling)
    _warn_pooling(model, pooling, p)
    prefix = prompt_text(model, prompt_name)
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        return np.zeros((0, model.config.n_embd), np.float32)
    ids = [
        embedding_tokens(model, prefix + t, p) if isinstance(t, str) else [int(x) for x in t]
        for t in items
    ]
    if not model.slots.n_free():
        raise TribitError(f"all {model.n_seq} sequence slots are in use")
    batch = EmbeddingBatch(model, batch_tokens)
    uids = [batch.insert(t, p, normalize) for t in ids]
    out: dict[int, np.ndarray | list] = {}
    try:
        while batch.busy:
            for uid, r in batch.step():
                if isinstance(r, BaseException):
                    raise r
                out[uid] = r
    finally:
        batch.close()
    vecs = [out[u] for u in uids]
    return vecs if p == "none" else np.stack(vecs)


def _warn_pooling(model, asked: str | None, used: str) -> None:
    """bitnet.cpp's embedding converter writes MEAN when the checkpoint has no pooling
    config; BitNet-embedding models are trained with last-token pooling."""
    if (
        asked is None
        and used == "mean"
        and getattr(model, "n_input_norms", 0)
        and model.config.arch == "qwen3"
    ):
        warnings.warn(
            "this BitNet-embedding file says pooling 'mean' (what bitnet.cpp's converter "
            "writes when it finds no pooling config); the model is trained with last-token "
            "pooling: pass pooling='last' (docs/USAGE.md, Embeddings)",
            PoolingWarning,
            stacklevel=3,
        )
