"""Exact-answer accuracy on bAbI-style questions, with greedy decoding.

Engine-neutral: an *answerer* is any callable `prompt -> generated text`.
`tribit_answerer(model)` makes one from a loaded `tribit.Model` (passed in, not
imported: this package sits below the runtime); the PyTorch side lives in
`tribit.train.evaluate`. Comparing two answerers question by question is the
end-to-end lossless check: the runtime must answer exactly as training did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import babi

Answerer = Callable[[str], str]


def tribit_answerer(model: Any, max_tokens: int = 24) -> Answerer:
    """Greedy answers from a loaded `tribit.Model` through its `generate` (the library's one
    decoding loop; passed in, not imported: this package sits below the runtime), up to the
    end of generation or the first newline."""

    def answer(prompt: str) -> str:
        ids = model.tokenize(prompt)
        return model.generate(ids, max_tokens=max_tokens, stop=["\n"], reuse_cache=False)

    return answer


@dataclass
class TaskScore:
    """Correct answers out of `n` for one task (and, with two engines, agreements)."""

    n: int = 0
    correct: int = 0
    agree: int = 0
    correct_b: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def accuracy_b(self) -> float:
        return self.correct_b / self.n if self.n else 0.0


@dataclass
class EvalResult:
    """Per-task scores plus every question's answers (for inspection)."""

    tasks: dict[int, TaskScore] = field(default_factory=dict)
    rows: list[tuple[babi.Example, str, str | None]] = field(default_factory=list)

    def total(self) -> TaskScore:
        t = TaskScore()
        for s in self.tasks.values():
            t.n += s.n
            t.correct += s.correct
            t.agree += s.agree
            t.correct_b += s.correct_b
        return t


def evaluate(
    answer: Answerer,
    examples: Sequence[babi.Example],
    answer_b: Answerer | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score `answer` (and optionally a second engine `answer_b`, counting the
    questions where both generate the very same text) on `examples`."""
    res = EvalResult()
    for i, ex in enumerate(examples):
        got = answer(ex.prompt)
        got_b = answer_b(ex.prompt) if answer_b is not None else None
        s = res.tasks.setdefault(ex.task, TaskScore())
        s.n += 1
        s.correct += babi.is_correct(got, ex)
        if got_b is not None:
            s.correct_b += babi.is_correct(got_b, ex)
            s.agree += got == got_b
        res.rows.append((ex, got, got_b))
        if progress is not None:
            progress(i + 1)
    res.tasks = dict(sorted(res.tasks.items()))
    return res


def held_out_questions(
    n: int, seed: int = 0, tasks: Sequence[int] = babi.TASKS, split: str = "heldout"
) -> list[babi.Example]:
    """`n` held-out questions (names and places never seen in training): split
    "heldout" (the heldout lists), or "shapes" (words of other shapes, longer stories)."""
    if split == "train":
        raise ValueError("held-out questions come from 'heldout' or 'shapes', not 'train'")
    return babi.generate(n, split, seed=seed, tasks=tasks)


def format_report(res: EvalResult, name_a: str = "tribit", name_b: str | None = None) -> str:
    """A plain-text table: task, questions, accuracy (per engine), agreement."""
    head = f"{'task':<28}{'n':>6}{name_a:>10}"
    if name_b:
        head += f"{name_b:>10}{'agree':>10}"
    lines = [head]
    items = [*res.tasks.items(), ("all", res.total())]
    for task, s in items:
        label = f"{task} {babi.TASK_NAMES[task]}" if isinstance(task, int) else task
        line = f"{label:<28}{s.n:>6}{100 * s.accuracy:>9.1f}%"
        if name_b:
            line += f"{100 * s.accuracy_b:>9.1f}%{s.agree:>6}/{s.n:<4}"
        lines.append(line)
    return "\n".join(lines)
