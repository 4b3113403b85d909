"""Batch completion over a Ray Data dataset: one model per actor, each batch one batched
decode.

    import ray
    from tribit.integrations.ray_data import Completer

    ds = ray.data.read_json("prompts.jsonl")            # rows {"prompt": "..."}
    ds = ds.map_batches(Completer, fn_constructor_kwargs={"model": "m.gguf", "threads": 4,
                                                          "max_tokens": 128},
                        concurrency=2, num_cpus=4, batch_size=64)
    ds.write_parquet("out/")                             # rows {"prompt", "completion"}

`Completer.__init__` loads the model once per actor (`tribit.load`, memory-mapped, with
`slots` KV slots); `__call__` maps a batch (a dict of columns, Ray Data's "numpy" format or
plain lists) to the same batch plus a completion column. The prompts of a batch go through
one `tribit.BatchGenerator`: up to `slots` sequences decode together, one forward per step,
and a finished one's slot takes the next prompt. Greedy by default, so each completion is
the text `tribit.generate(model, prompt, max_tokens=...)` gives alone. Give `num_cpus` =
`threads` to `map_batches` so Ray books the CPUs the actor uses. docs/SCALING.md has the
corpus-in, Parquet-out recipe and the no-code alternative (an HTTP processor against a
running endpoint).

Embeddings: `Embedder` (or `Completer(task="embed")`, the same thing) maps a text column to
a vector column through `Model.embed`:

    ds = ray.data.read_json("passages.jsonl")           # rows {"text": "..."}
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={"model": "be.gguf", "threads": 4},
                        concurrency=2, num_cpus=4, batch_size=64)
    ds.write_parquet("vectors/")                         # rows {"text", "embedding"}

The texts of a batch share the model's `slots` KV slots (one text each, up to `batch_tokens`
tokens per forward); each vector equals `model.embed(text)` of that text alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import tribit
from tribit.chat import chat_prompt_tokens
from tribit.embedding import DEFAULT_BATCH_TOKENS, check_pooling, prompt_text
from tribit.generation import BatchGenerator, check_prompt, tokenize_prompt

__all__ = ["Completer", "Embedder", "complete_all"]

TASKS = ("complete", "embed")


def complete_all(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_tokens: int | None = 128,
    sampling: tribit.SamplerParams | None = None,
    stop: Sequence[str] | str | None = None,
) -> list[str]:
    """The completions of token-id prompts, decoded together over the model's free KV slots
    (`model.n_seq` at most at a time), in the order of `prompts`."""
    batch = BatchGenerator(model, prefill_chunk=128, batch_tokens=512)
    texts = [""] * len(prompts)
    owner: dict[int, int] = {}  # uid -> prompt index
    todo = iter(range(len(prompts)))
    try:
        while True:
            while model.slots.n_free() > 0:  # fill the free slots
                i = next(todo, None)
                if i is None:
                    break
                owner[
                    batch.insert(prompts[i], max_tokens=max_tokens, sampling=sampling, stop=stop)
                ] = i
            if not len(batch):
                return texts
            for chunk in batch.step():
                if chunk.error is not None:
                    raise chunk.error
                texts[owner[chunk.uid]] += chunk.text
    finally:
        batch.close()


class Completer:
    """A callable class for `Dataset.map_batches`: prompts (or chat messages) -> completions.

    model: the GGUF file on every node (None: the embedded model); threads: tribit's
    threads (give the same `num_cpus` to map_batches); slots: sequences decoded together;
    ctx: context per slot; prompt_column / output_column: the columns read and written;
    chat: the prompt column holds message lists (rendered with the model's chat template);
    max_tokens, stop and `**sampling` (fields of tribit.SamplerParams: temperature, top_k,
    seed, ...) as in tribit.generate; greedy without them. task="embed": an `Embedder` over
    the prompt column, writing `output_column` (default "embedding") instead.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        threads: int | None = None,
        slots: int = 8,
        ctx: int | None = None,
        head_type: str | None = None,
        prompt_column: str = "prompt",
        output_column: str | None = None,
        chat: bool = False,
        max_tokens: int | None = 128,
        stop: Sequence[str] | str | None = None,
        task: str = "complete",
        **sampling: Any,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.embedder: Embedder | None = None
        if task == "embed":
            if chat or stop is not None or sampling:
                raise ValueError("chat, stop and sampling options are for task='complete'")
            self.embedder = Embedder(
                model,
                threads=threads,
                slots=slots,
                ctx=ctx,
                text_column=prompt_column,
                output_column=output_column or "embedding",
            )
            self.model = self.embedder.model
            return
        self.model = tribit.load(
            model, n_threads=threads, n_ctx=ctx, n_seq=slots, head_type=head_type
        )
        self.prompt_column, self.output_column = prompt_column, output_column or "completion"
        self.chat, self.max_tokens, self.stop = chat, max_tokens, stop
        self.sampling = tribit.SamplerParams().replace(**sampling) if sampling else None
        if self.sampling is not None:
            self.sampling.validate()

    def tokens(self, prompt: Any) -> list[int]:
        """One prompt's token ids: text, token ids, or (chat) a list of messages."""
        if self.chat:
            return chat_prompt_tokens(self.model, list(prompt))
        if isinstance(prompt, np.ndarray):
            prompt = prompt.tolist()
        return check_prompt(self.model, tokenize_prompt(self.model, prompt))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if self.embedder is not None:
            return self.embedder(batch)
        prompts = [self.tokens(p) for p in batch[self.prompt_column]]
        texts = complete_all(
            self.model, prompts, max_tokens=self.max_tokens, sampling=self.sampling, stop=self.stop
        )
        out = dict(batch)
        out[self.output_column] = np.array(texts, dtype=object)
        return out


class Embedder:
    """A callable class for `Dataset.map_batches`: texts -> embedding vectors.

    model: the GGUF embedding model on every node (docs/USAGE.md, Embeddings); threads,
    slots (texts embedded together), ctx (context per text): as `Completer`; text_column /
    output_column: the columns read and written (the vectors: float32 (n, n_embd), one row
    per text, a tensor column in Ray Data); pooling, normalize, prompt_name, batch_tokens:
    as `Model.embed` (pooling "none", a matrix per text, is not offered); prefix: text put
    before every input (after the prompt). A text column may also hold token-id lists,
    embedded as given.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        threads: int | None = None,
        slots: int = 8,
        ctx: int | None = None,
        text_column: str = "text",
        output_column: str = "embedding",
        pooling: str | None = None,
        normalize: bool = True,
        prompt_name: str | None = None,
        prefix: str = "",
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ):
        if pooling == "none":
            raise ValueError("pooling='none' gives a matrix per text; choose last, mean or cls")
        self.model = tribit.load(model, n_threads=threads, n_ctx=ctx, n_seq=slots)
        check_pooling(self.model, pooling)  # refused here, not in the first batch
        self.prefix = prompt_text(self.model, prompt_name) + prefix
        self.text_column, self.output_column = text_column, output_column
        self.pooling, self.normalize, self.batch_tokens = pooling, normalize, batch_tokens

    def item(self, text: Any) -> str | list[int]:
        """One input: a string (with the prefix) or token ids (as given)."""
        if isinstance(text, str):
            return self.prefix + text
        if isinstance(text, np.ndarray):
            text = text.tolist()
        if isinstance(text, Sequence) and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in text
        ):
            return [int(t) for t in text]
        raise TypeError(f"expected a string or a list of token ids, got {type(text).__name__}")

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        items = [self.item(t) for t in batch[self.text_column]]
        vecs = self.model.embed(
            items, pooling=self.pooling, normalize=self.normalize, batch_tokens=self.batch_tokens
        )
        out = dict(batch)
        out[self.output_column] = vecs
        return out
