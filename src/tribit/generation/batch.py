"""The generation core: any number of sequences advanced together, one forward per step.

A `BatchGenerator` owns the per-sequence state (prompt, history, logits processors,
sampler, stop matcher, streaming detokenizer, finish reason, usage, timings) of the
sequences inserted into it. Each `step()` makes one `Model.forward` that carries the next
token of every decoding sequence plus chunks of pending prompts, then samples and
detokenizes each sequence that got logits, and returns one `GenerationChunk` per such
sequence. A single generation (`stream_generate`) is a batch of one; the server's engine
only schedules (queue, cancellation, metrics) over the same object.

KV slots are claimed from the model's slot table (`Model.slots`): a new sequence takes the
free slot holding the longest prefix of its prompt and computes only the rest. The slot is
released when the sequence ends or is removed; what it holds stays for the next one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ContextLengthError, ModelError, TribitError
from ..sampling import SamplerParams, make_logits_processors, make_sampler
from .stop import StopMatcher

Sampler = Callable[[np.ndarray], int]
LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]

FINISH_STOP = "stop"  # an end-of-generation token or a stop string
FINISH_LENGTH = "length"  # max_tokens reached, or the context is full
FINISH_ERROR = "error"  # the sequence failed (the chunk's `error` says why)


@dataclass
class GenerationChunk:
    """One generated token of one sequence: the text it completed, and running statistics.

    `text` may be empty (an incomplete UTF-8 sequence, or text held back because it might
    start a stop string). The last chunk of a sequence has `finish_reason` set.
    `generation_tokens` counts every sampled token; `completion_tokens` leaves out an
    end-of-generation token that ended the sequence (it is not part of the completion).
    """

    text: str
    token: int
    finish_reason: str | None = None
    uid: int = 0  # which sequence of the batch
    prompt_tokens: int = 0  # tokens in the prompt
    prompt_cached_tokens: int = 0  # of which reused from the KV cache (not computed)
    prompt_time_s: float = 0.0  # from the sequence's first forward to its first token
    prompt_tps: float = 0.0  # computed prompt tokens per second
    generation_tokens: int = 0
    completion_tokens: int = 0
    generation_time_s: float = 0.0  # from the first generated token to this one
    generation_tps: float = 0.0
    queue_time_s: float = 0.0  # from insert to the sequence's first forward
    error: BaseException | None = field(default=None, repr=False)

    @property
    def usage(self) -> dict[str, int]:
        """OpenAI's usage record."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def check_prompt(model, tokens: Sequence[int]) -> list[int]:
    """The prompt as a list of ids, or the error a generation would raise for it: empty
    (TribitError), longer than n_ctx (ContextLengthError), an id outside the vocabulary
    (ModelError)."""
    prompt = [int(t) for t in tokens]
    if not prompt:
        raise TribitError("the prompt is empty: give at least one token")
    if len(prompt) > model.n_ctx:
        raise ContextLengthError(len(prompt), int(model.n_ctx))
    n_vocab = int(model.config.n_vocab)
    bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ModelError(f"token id {bad} out of range [0, {n_vocab})")
    return prompt


def check_max_tokens(max_tokens: Any) -> int | None:
    """max_tokens as a limit: None or < 0 is none (until end of generation or context)."""
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
        raise TribitError(f"max_tokens must be an integer or None, got {max_tokens!r}")
    return None if max_tokens < 0 else int(max_tokens)


@dataclass(eq=False)
class _Sequence:
    """A sequence's state inside the batch."""

    uid: int
    prompt: list[int]
    limit: int | None
    sampler: Sampler | None
    processors: list[LogitsProcessor]
    stopper: StopMatcher
    decoder: Any  # a StreamDecoder, or None when no text is wanted
    stop_at_eog: bool
    slot: int = -1
    n_cached: int = 0  # prompt tokens found in the slot
    n_fed: int = 0  # prompt tokens whose K/V are in the slot
    history: list[int] = field(default_factory=list)  # prompt + sampled tokens
    n_gen: int = 0
    t_insert: float = 0.0
    t_start: float = 0.0
    t_first: float = 0.0

    @property
    def decoding(self) -> bool:
        return self.n_fed == len(self.prompt) and self.n_gen > 0


class BatchGenerator:
    """Advance any set of sequences of one model with one forward per step.

    prefill_chunk: at most this many prompt tokens of one sequence per step (None: the
    whole prompt at once); batch_tokens: at most this many tokens per step (None: no
    limit). Decode tokens go first, so running streams are never stalled for a prompt.
    Not thread-safe: one thread drives it (the server's engine thread, or a generator).
    """

    def __init__(self, model, prefill_chunk: int | None = None, batch_tokens: int | None = None):
        self.model = model
        self.prefill_chunk = prefill_chunk
        self.batch_tokens = batch_tokens
        self.eog = frozenset(model.tokenizer.eog_ids)
        self._seqs: dict[int, _Sequence] = {}  # insertion order = batch order
        self._done: list[GenerationChunk] = []  # finished without a forward (max_tokens 0)
        self._uids = itertools.count()

    # -- sequences -------------------------------------------------------------------
    def insert(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int | None = None,
        sampling: SamplerParams | None = None,
        sampler: Sampler | None = None,
        logits_processors: Sequence[LogitsProcessor] | None = None,
        stop: Sequence[str] | str | None = None,
        seq: int | None = None,
        reuse_cache: bool = True,
        stop_at_eog: bool = True,
        detokenize: bool = True,
    ) -> int:
        """Add a sequence; return its uid (the `uid` of its chunks).

        sampling builds the sampler and logits processors (default: greedy); an explicit
        `sampler` / `logits_processors` replaces the built one. seq: the KV slot to use
        (None: the free slot with the longest cached prefix of the prompt; SlotBusyError
        when none is free). reuse_cache: compute only what the slot does not already hold.
        stop_at_eog False: end-of-generation tokens are ordinary tokens (generate_step).
        """
        prompt = check_prompt(self.model, prompt)
        limit = check_max_tokens(max_tokens)
        params = sampling if sampling is not None else SamplerParams()
        if sampler is None:
            sampler = make_sampler(params)
        if logits_processors is None:
            logits_processors = make_logits_processors(params)
        stopper = StopMatcher(stop)
        decoder = None
        if detokenize:
            from ..tokenizer import StreamDecoder

            decoder = StreamDecoder(self.model.tokenizer, skip_special=True)  # as llama-cli
        s = _Sequence(
            next(self._uids),
            prompt,
            limit,
            sampler,
            list(logits_processors),
            stopper,
            decoder,
            stop_at_eog,
            t_insert=time.perf_counter(),
        )
        if limit == 0:  # nothing to compute: finished at the next step, slot untouched
            self._done.append(self._chunk(s, "", -1, FINISH_LENGTH, s.t_insert))
            return s.uid
        slot, n_common = self.model.slots.claim(prompt, seq)
        try:
            # keep at least one prompt token to compute: its logits give the first token
            s.n_cached = min(n_common, len(prompt) - 1) if reuse_cache else 0
            self.model.trim(slot, s.n_cached)
        except BaseException:
            self.model.slots.release(slot)
            raise
        s.slot, s.n_fed, s.history = slot, s.n_cached, list(prompt)
        self._seqs[s.uid] = s
        return s.uid

    def remove(self, uid: int) -> None:
        """Drop a sequence (finished or not) and free its slot; unknown uids are ignored."""
        s = self._seqs.pop(uid, None)
        if s is not None:
            self.model.slots.release(s.slot)

    def close(self) -> None:
        """Remove every sequence."""
        for uid in list(self._seqs):
            self.remove(uid)
        self._done.clear()

    def __len__(self) -> int:
        return len(self._seqs) + len(self._done)

    def __contains__(self, uid: int) -> bool:
        return uid in self._seqs or any(c.uid == uid for c in self._done)

    def slot_of(self, uid: int) -> int:
        """The KV slot a sequence holds (-1 for none)."""
        s = self._seqs.get(uid)
        return s.slot if s is not None else -1

    # -- stepping --------------------------------------------------------------------
    def step(self) -> list[GenerationChunk]:
        """One forward over every sequence that has work; a chunk per sequence that got a
        token (or failed: finish_reason "error", `error` set). Finished and failed
        sequences leave the batch (their slots are released)."""
        out, self._done = self._done, []
        parts = self._plan()
        if parts:
            now = time.perf_counter()
            for s, *_ in parts:
                if s.t_start == 0.0:
                    s.t_start = now
            for s, logits in self._forward(parts, out):
                try:
                    out.append(self._advance(s, logits))
                except Exception as e:  # a sampler, processor or decoder error: this one only
                    out.append(self._fail(s, e))
        return out

    def _plan(self) -> list[tuple[_Sequence, list[int], list[int], list[bool]]]:
        """Per sequence: its tokens of this step, their positions, which want logits."""
        parts = []
        budget = self.batch_tokens if self.batch_tokens is not None else 1 << 62
        for s in self._seqs.values():  # decoding sequences first: one token each
            if s.decoding:
                parts.append((s, [s.history[-1]], [len(s.history) - 1], [True]))
                budget -= 1
        for s in self._seqs.values():  # then chunks of pending prompts
            if s.n_fed < len(s.prompt) and budget > 0:
                n = min(budget, len(s.prompt) - s.n_fed)
                if self.prefill_chunk is not None:
                    n = min(n, self.prefill_chunk)
                p0, last = s.n_fed, len(s.prompt) - 1
                parts.append(
                    (
                        s,
                        s.prompt[p0 : p0 + n],
                        list(range(p0, p0 + n)),
                        [p == last for p in range(p0, p0 + n)],
                    )
                )
                budget -= n
        return parts

    def _forward(self, parts, out: list[GenerationChunk]) -> list[tuple[_Sequence, np.ndarray]]:
        """One forward for all parts; if it fails, each part alone, so that a sequence the
        model refuses fails alone (the rows a failed batch wrote are written again)."""
        toks = [t for _, tk, _, _ in parts for t in tk]
        pos = [p for _, _, ps, _ in parts for p in ps]
        seq = [s.slot for s, tk, _, _ in parts for _ in tk]
        want = [w for _, _, _, ws in parts for w in ws]
        try:
            logits = self.model.forward(toks, pos, seq, logits=want)
        except Exception as e:
            if len(parts) == 1:
                out.append(self._fail(parts[0][0], e))
                return []
            rows = []
            for part in parts:
                rows.extend(self._forward([part], out))
            return rows
        for s, tk, _, _ in parts:
            if not s.decoding:
                s.n_fed += len(tk)
        owners = [s for s, _, _, ws in parts if ws[-1]]
        return list(zip(owners, logits, strict=True))

    def _advance(self, s: _Sequence, logits: np.ndarray) -> GenerationChunk:
        now = time.perf_counter()
        for proc in s.processors:
            logits = proc(s.history, logits)
        tok = int(s.sampler(logits)) if s.sampler is not None else int(np.argmax(logits))
        s.history.append(tok)
        s.n_gen += 1
        if s.n_gen == 1:
            s.t_first = now
        finish = None
        if tok in self.eog and s.stop_at_eog:
            text, finish = self._final_text(s)
            finish = FINISH_STOP
        else:
            text, stopped = s.stopper.push(s.decoder.push(tok) if s.decoder else "")
            if stopped:
                finish = FINISH_STOP
            # the last token: max_tokens reached, or no position left to feed it
            elif (s.limit is not None and s.n_gen >= s.limit) or len(s.history) > self.model.n_ctx:
                rest, finish = self._final_text(s)
                text += rest
        chunk = self._chunk(s, text, tok, finish, now)
        if finish is not None:
            self.remove(s.uid)
        return chunk

    @staticmethod
    def _final_text(s: _Sequence) -> tuple[str, str]:
        """What the decoder and the stop matcher still hold, and the finish reason."""
        rest, stopped = s.stopper.push(s.decoder.flush() if s.decoder else "")
        return (rest, FINISH_STOP) if stopped else (rest + s.stopper.flush(), FINISH_LENGTH)

    def _fail(self, s: _Sequence, e: BaseException) -> GenerationChunk:
        chunk = self._chunk(s, "", -1, FINISH_ERROR, time.perf_counter())
        chunk.error = e
        self.remove(s.uid)
        return chunk

    def _chunk(
        self, s: _Sequence, text: str, tok: int, finish: str | None, now: float
    ) -> GenerationChunk:
        c = GenerationChunk(
            text,
            tok,
            finish,
            s.uid,
            prompt_tokens=len(s.prompt),
            prompt_cached_tokens=s.n_cached,
            generation_tokens=s.n_gen,
        )
        c.completion_tokens = s.n_gen - (
            1 if finish == FINISH_STOP and tok in self.eog and s.stop_at_eog else 0
        )
        if s.t_start:
            c.queue_time_s = s.t_start - s.t_insert
        if s.n_gen:
            c.prompt_time_s = s.t_first - s.t_start
            computed = len(s.prompt) - s.n_cached
            c.prompt_tps = computed / c.prompt_time_s if c.prompt_time_s > 0 else 0.0
            c.generation_time_s = now - s.t_first
            if s.n_gen > 1 and c.generation_time_s > 0:
                c.generation_tps = (s.n_gen - 1) / c.generation_time_s
        return c
