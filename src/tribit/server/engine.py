"""The batching engine: one thread owns the model and runs continuous batching.

Each active request holds a sequence slot of the KV cache. Every step makes one
`model.forward` call that carries the next token of every decoding request plus
chunks of pending prompts, so one pass over the weights serves them all. A
request joins and leaves the batch between steps; prompts are prefilled in
chunks so running streams are never stalled for long.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..generate import FINISH_LENGTH, FINISH_STOP, StopMatcher
from ..tokenizer import StreamDecoder


class QueueFullError(Exception):
    """The request queue is at its limit (the server answers 503)."""


@dataclass
class Job:
    """One generation request as the engine sees it."""

    tokens: list[int]
    max_tokens: int | None
    sampler: Callable[[np.ndarray], int]
    processors: Sequence[Callable]
    stop: Sequence[str]
    emit: Callable[[dict[str, Any]], None]  # thread-safe: hands an event to the client side
    cancelled: threading.Event = field(default_factory=threading.Event)
    # engine state
    slot: int = -1
    n_prefilled: int = 0
    history: list[int] = field(default_factory=list)
    n_gen: int = 0
    last: int = -1
    t_submit: float = 0.0
    t_first: float = 0.0
    decoder: Any = None
    stopper: Any = None


class Engine:
    """Continuous batching over `model.n_seq` slots."""

    def __init__(
        self, model, max_queue: int = 64, batch_tokens: int = 256, prefill_chunk: int = 128
    ):
        self.model = model
        self.max_queue = max_queue
        self.batch_tokens = batch_tokens
        self.prefill_chunk = prefill_chunk
        self.eog = set(model.tokenizer.eog_ids)
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._active: dict[int, Job] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="tribit-engine", daemon=True)
        # metrics
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self.gen_seconds_total = 0.0
        self.steps_total = 0

    # -- client side ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def submit(self, job: Job) -> None:
        with self._cv:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the request queue is full ({self.max_queue} waiting)")
            job.t_submit = time.perf_counter()
            self._waiting.append(job)
            self.requests_total += 1
            self._cv.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        return len(self._active)

    # -- engine thread -------------------------------------------------------
    def _run(self) -> None:
        free = list(range(self.model.n_seq))
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._active:
                    self._cv.wait()
                if self._stop:
                    return
                while self._waiting and free:
                    job = self._waiting.popleft()
                    if job.cancelled.is_set():
                        continue
                    job.slot = free.pop(0)
                    self._active[job.slot] = job
            for job in list(self._active.values()):
                if job.cancelled.is_set():
                    self._release(job, free)
            if self._active:
                try:
                    self._step(free)
                except Exception as e:  # a bug outside any one job: fail what is active
                    for job in list(self._active.values()):
                        self._fail(job, e, free)

    def _fail(self, job: Job, exc: BaseException, free: list[int]) -> None:
        """End one job with an error event; the others are untouched."""
        try:
            job.emit({"error": f"generation failed: {type(exc).__name__}: {exc}"})
        except Exception:  # the client side is gone: nothing to tell
            pass
        self._release(job, free)

    def _release(self, job: Job, free: list[int]) -> None:
        self._active.pop(job.slot, None)
        self.model.reset(job.slot)
        free.append(job.slot)
        free.sort()

    def _step(self, free: list[int]) -> None:
        # per job: its tokens in this step (toks, pos, want) and whether it gets a row
        parts: list[tuple[Job, list[int], list[int], list[bool]]] = []
        budget = self.batch_tokens
        # decoding requests first: one token each
        for job in self._active.values():
            if job.n_prefilled == len(job.tokens) and job.last >= 0:
                parts.append((job, [job.last], [len(job.history) - 1], [True]))
                budget -= 1
        # then chunks of pending prompts
        for job in list(self._active.values()):
            if job.n_prefilled < len(job.tokens) and budget > 0:
                try:
                    if job.n_prefilled == 0:
                        self.model.reset(job.slot)
                        job.decoder = StreamDecoder(self.model.tokenizer)
                        job.stopper = StopMatcher(job.stop)
                        job.history = list(job.tokens)
                except Exception as e:
                    self._fail(job, e, free)
                    continue
                n = min(self.prefill_chunk, budget, len(job.tokens) - job.n_prefilled)
                p0, last = job.n_prefilled, len(job.tokens) - 1
                parts.append((job, job.tokens[p0 : p0 + n], list(range(p0, p0 + n)),
                              [p == last for p in range(p0, p0 + n)]))
                job.n_prefilled += n
                budget -= n
        if not parts:
            return
        rows = self._forward(parts, free)
        self.steps_total += 1
        for job, row in rows:
            try:
                self._advance(job, row, free)
            except Exception as e:  # a sampler, processor or decoder error: this job only
                self._fail(job, e, free)

    def _forward(self, parts, free: list[int]) -> list[tuple[Job, np.ndarray]]:
        """One forward for all parts; if it fails, each part alone, so that a request that
        the model refuses (a bad token id, ...) fails alone. The cache rows a failed batch
        may have written are those the retries write again (same positions)."""
        toks = [t for _, tk, _, _ in parts for t in tk]
        pos = [p for _, _, ps, _ in parts for p in ps]
        seq = [job.slot for job, tk, _, _ in parts for _ in tk]
        want = [w for _, _, _, ws in parts for w in ws]
        owners = [job for job, _, _, ws in parts if ws[-1]]
        try:
            logits = self.model.forward(toks, pos, seq, logits=want)
        except Exception as e:
            if len(parts) == 1:
                self._fail(parts[0][0], e, free)
                return []
            out = []
            for part in parts:
                out.extend(self._forward([part], free))
            return out
        return list(zip(owners, logits, strict=True))

    def _advance(self, job: Job, logits: np.ndarray, free: list[int]) -> None:
        now = time.perf_counter()
        if job.n_gen == 0:
            job.t_first = now
            self.prompt_tokens_total += len(job.tokens)
        for proc in job.processors:
            logits = proc(job.history, logits)
        tok = int(job.sampler(logits))
        job.history.append(tok)
        job.last = tok
        job.n_gen += 1
        self.generated_tokens_total += 1
        finish = None
        if tok in self.eog:
            text, stopped = job.stopper.push(job.decoder.flush())
            text = text if stopped else text + job.stopper.flush()
            finish = FINISH_STOP
        else:
            text, stopped = job.stopper.push(job.decoder.push(tok))
            if stopped:
                finish = FINISH_STOP
            elif (job.max_tokens is not None and job.n_gen >= job.max_tokens) or len(
                job.history
            ) >= self.model.n_ctx:
                rest, stopped = job.stopper.push(job.decoder.flush())
                text += rest if stopped else rest + job.stopper.flush()
                finish = FINISH_STOP if stopped else FINISH_LENGTH
        event: dict[str, Any] = {"text": text, "token": tok, "finish_reason": finish}
        if finish is not None:
            gen_s = now - job.t_first
            self.gen_seconds_total += gen_s
            event["usage"] = {
                "prompt_tokens": len(job.tokens),
                "completion_tokens": job.n_gen,
                "total_tokens": len(job.tokens) + job.n_gen,
            }
            event["timings"] = {
                "prompt_ms": round((job.t_first - job.t_submit) * 1000, 2),
                "predicted_per_second": round((job.n_gen - 1) / gen_s, 2) if gen_s > 0 else None,
            }
            job.emit(event)
            self._release(job, free)
        else:
            job.emit(event)
