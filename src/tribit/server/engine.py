"""The scheduler: one thread owns the model and drives the library's `BatchGenerator`.

Requests wait in a bounded queue; whenever a KV slot is free the next one joins the batch
(on the free slot holding the longest prefix of its prompt: a shared system prompt or a
chat's earlier turns are not recomputed). Each step is one `BatchGenerator.step()`, one
forward for every active request; each chunk it returns goes to its request's client.
Cancelled requests (the client left) leave the batch between steps. All decoding logic
(sampling, stop strings, detokenizing, finish reasons, usage) is the library's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embedding import EmbeddingBatch
from ..generation import FINISH_ERROR, BatchGenerator, GenerationChunk

log = logging.getLogger("tribit.serve")


class QueueFullError(Exception):
    """The request queue is at its limit (the server answers 503)."""


class EngineStoppedError(Exception):
    """The engine thread is not running: shut down, or died (the server answers 503)."""


@dataclass
class Job:
    """One generation request: the prompt, the `BatchGenerator.insert` arguments, and where
    its chunks go (`emit` must be thread-safe: it hands a chunk to the client side)."""

    prompt: list[int]
    options: dict[str, Any]  # max_tokens, sampling, stop
    emit: Callable[[GenerationChunk], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    uid: int = -1


@dataclass
class EmbedJob:
    """One embeddings request: its inputs (token ids), pooling, and where its result goes:
    `emit` gets the (n, dim) float32 vectors in input order, or the exception that failed
    the request (thread-safe, like Job's)."""

    inputs: list[list[int]]
    pooling: str
    emit: Callable[[Any], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    uids: list[int] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)


@dataclass
class Metrics:
    """Counters for /metrics."""

    requests_total: int = 0
    prompt_tokens_total: int = 0  # prompt tokens of started requests
    prompt_cached_tokens_total: int = 0  # of which reused from a slot (not computed)
    generated_tokens_total: int = 0
    gen_seconds_total: float = 0.0
    steps_total: int = 0
    embedding_inputs_total: int = 0  # texts embedded
    embedding_tokens_total: int = 0


class Engine:
    """Continuous batching over the model's `n_seq` slots."""

    def __init__(
        self, model, max_queue: int = 64, batch_tokens: int = 256, prefill_chunk: int = 128
    ):
        self.model = model
        self.max_queue = max_queue
        self.batch = BatchGenerator(model, prefill_chunk=prefill_chunk, batch_tokens=batch_tokens)
        # embedding requests: every input of every request shares the embedder's forwards
        self.embedder = EmbeddingBatch(model, batch_tokens=max(batch_tokens, 512))
        self._embed_jobs: dict[int, EmbedJob] = {}  # input uid -> its job
        self.metrics = Metrics()
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._active: dict[int, Job] = {}  # uid -> job
        self._stop = False
        self.error: str | None = None  # why the engine thread died, if it did
        self._thread = threading.Thread(target=self._run, name="tribit-engine", daemon=True)

    # -- client side ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        """The engine thread is running: False before `start`, after `shutdown`, and when
        it died (`error` says why); a health check fails on it."""
        return self._thread.is_alive()

    def submit(self, job: Job | EmbedJob) -> None:
        with self._cv:
            if self._stop or self.error is not None:
                why = f": {self.error}" if self.error else ""
                raise EngineStoppedError(f"the engine has stopped{why}")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the request queue is full ({self.max_queue} waiting)")
            self._waiting.append(job)
            self.metrics.requests_total += 1
            self._cv.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        return len(self._active)

    # -- engine thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # a bug: fail every request instead of leaving it hanging
            self.error = f"{type(e).__name__}: {e}"
            log.error("the engine thread died: %s", self.error, exc_info=True)
            self._fail_all(e)

    def _fail_all(self, e: BaseException) -> None:
        """End every active and waiting job with an error (none is left hanging)."""
        with self._cv:
            embeds = {id(j): j for j in self._embed_jobs.values()}
            jobs = [*self._active.values(), *self._waiting, *embeds.values()]
            self._active.clear()
            self._waiting.clear()
            self._embed_jobs.clear()
        self.embedder.close()
        for job in jobs:
            if isinstance(job, EmbedJob):
                self._deliver(job, e)
            else:
                self._emit(job, _error_chunk(e))

    def _loop(self) -> None:
        while True:
            with self._cv:
                while (
                    not self._stop
                    and not self._waiting
                    and not self._active
                    and not self.embedder.busy
                ):
                    self._cv.wait()
                if self._stop:
                    self.batch.close()
                    self._fail_all(EngineStoppedError("the server is shutting down"))
                    return
                admitted = self._admit()
            for job in admitted:
                self._insert(job)
            for job in list(self._active.values()):
                if job.cancelled.is_set():
                    self._end(job)
            stepped = False
            if self._active:
                self._step()
                stepped = True
            if self.embedder.busy:
                stepped = self._embed_step() or stepped
            if not stepped and not admitted:
                time.sleep(0.01)  # every slot held outside the server (a library user)

    def _admit(self) -> list[Job | EmbedJob]:
        """Waiting jobs for the free slots (under the lock). An embeddings request goes to
        the embedder at once: its inputs take slots as they free up, a forward at a time."""
        jobs: list[Job | EmbedJob] = []
        free = self.model.slots.n_free()
        n_gen = 0
        while self._waiting:
            job = self._waiting[0]
            if isinstance(job, Job) and n_gen >= free:
                break
            self._waiting.popleft()
            if not job.cancelled.is_set():
                jobs.append(job)
                n_gen += isinstance(job, Job)
        return jobs

    def _insert(self, job: Job | EmbedJob) -> None:
        if isinstance(job, EmbedJob):
            try:
                job.uids = [self.embedder.insert(t, job.pooling) for t in job.inputs]
            except Exception as e:
                for uid in job.uids:
                    self.embedder.remove(uid)
                self._deliver(job, e)
                return
            for uid in job.uids:
                self._embed_jobs[uid] = job
            return
        try:
            job.uid = self.batch.insert(job.prompt, **job.options)
        except Exception as e:  # a request the generator refuses: its client hears why
            self._emit(job, _error_chunk(e))
            return
        self._active[job.uid] = job

    def _end(self, job: Job) -> None:
        self._active.pop(job.uid, None)
        self.batch.remove(job.uid)

    def _step(self) -> None:
        try:
            chunks = self.batch.step()
        except Exception as e:  # a bug outside any one sequence: fail what is active
            for job in list(self._active.values()):
                self._emit(job, _error_chunk(e))
                self._end(job)
            return
        m = self.metrics
        m.steps_total += 1
        for chunk in chunks:
            job = self._active.get(chunk.uid)
            if job is None:
                continue
            if chunk.generation_tokens == 1:
                m.prompt_tokens_total += chunk.prompt_tokens
                m.prompt_cached_tokens_total += chunk.prompt_cached_tokens
            if chunk.finish_reason != FINISH_ERROR:
                m.generated_tokens_total += 1
            if chunk.finish_reason is not None:
                m.gen_seconds_total += chunk.generation_time_s
                self._active.pop(chunk.uid, None)
            self._emit(job, chunk)

    def _embed_step(self) -> bool:
        """One embedder forward; finished requests get their vectors. False when no forward
        ran (every slot taken)."""
        for uid, job in list(self._embed_jobs.items()):
            if job.cancelled.is_set():
                self.embedder.remove(uid)
                del self._embed_jobs[uid]
        try:
            done = self.embedder.step()
        except Exception as e:  # a bug outside any one input: fail every embeddings request
            for job in {id(j): j for j in self._embed_jobs.values()}.values():
                self._deliver(job, e)
            self.embedder.close()
            self._embed_jobs.clear()
            return True
        for uid, result in done:
            job = self._embed_jobs.pop(uid, None)
            if job is None:
                continue
            if isinstance(result, BaseException):
                for other in job.uids:
                    self.embedder.remove(other)
                    self._embed_jobs.pop(other, None)
                self._deliver(job, result)
                continue
            job.results[uid] = result
            if len(job.results) == len(job.uids):
                self.metrics.embedding_inputs_total += len(job.uids)
                self.metrics.embedding_tokens_total += sum(map(len, job.inputs))
                self._deliver(job, np.stack([job.results[u] for u in job.uids]))
        return self.embedder.last_step_tokens > 0

    def _deliver(self, job: EmbedJob, result: Any) -> None:
        try:
            job.emit(result)
        except Exception:
            job.cancelled.set()

    def _emit(self, job: Job, chunk: GenerationChunk) -> None:
        try:
            job.emit(chunk)
        except Exception:  # the client side is gone: nothing to tell
            job.cancelled.set()


def _error_chunk(e: BaseException) -> GenerationChunk:
    chunk = GenerationChunk("", -1, FINISH_ERROR)
    chunk.error = e
    return chunk
