"""The public `tribit.Model`: the runtime model plus the generation methods users call on
it, and `tribit.load`, which returns one.

The runtime (`tribit.model`) sits below generation in the layer tower and knows nothing of
sampling or chat; this subclass joins them, with every method defined on the class.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import model as runtime
from .completion import create_chat_completion, create_completion
from .embedding import embed
from .generation import GenerationChunk, generate, stream_generate

# load()'s argument checks, without a file (`tribit serve` refuses bad flags before listening)
check_load_arguments = runtime.check_arguments


class Model(runtime.Model):
    """A loaded ternary model (create with `tribit.load`): `forward`, the KV slots, the
    tokenizer, generation: `generate`, `stream_generate`, `create_completion`,
    `create_chat_completion` (llama-cpp-python's shapes), and `embed`."""

    def generate(self, prompt: str | Sequence[int], **kwargs: Any) -> str:
        """`tribit.generate(self, ...)`."""
        return generate(self, prompt, **kwargs)

    def stream_generate(
        self, prompt: str | Sequence[int], **kwargs: Any
    ) -> Iterator[GenerationChunk]:
        """`tribit.stream_generate(self, ...)`."""
        return stream_generate(self, prompt, **kwargs)

    def create_completion(
        self, prompt: str | Sequence[int], **kwargs: Any
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """`tribit.create_completion(self, ...)`: an OpenAI `text_completion`."""
        return create_completion(self, prompt, **kwargs)

    def embed(
        self,
        texts: str | Sequence[str] | Sequence[Sequence[int]],
        pooling: str | None = None,
        normalize: bool = True,
        batch_tokens: int = 512,
        prompt_name: str | None = None,
    ) -> Any:
        """Embeddings of `texts`: float32 numpy (n, n_embd), one L2-normalised row per text
        (`normalize=False`: raw). pooling: "last", "mean", "cls" or "none" (a list of
        per-token matrices); None: the file's `pooling_type`. Texts get BOS/EOS as the
        file says (EOS for last-token pooling when it says nothing); lists of token ids
        are used as given. Several texts share each forward, one KV slot each.
        prompt_name: the file's named prompt (e.g. "query", from a converted checkpoint's
        sentence-transformers config) put before every text."""
        return embed(
            self,
            texts,
            pooling=pooling,
            normalize=normalize,
            batch_tokens=batch_tokens,
            prompt_name=prompt_name,
        )

    def create_chat_completion(
        self, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """`tribit.create_chat_completion(self, ...)`: an OpenAI `chat.completion`."""
        return create_chat_completion(self, messages, **kwargs)


def load(
    path: str | os.PathLike | None = None,
    n_threads: int | None = None,
    n_ctx: int | None = None,
    kv_type: str = "f16",
    n_seq: int = 1,
    isa: str | None = None,
    head_type: str | None = None,
    group_mode: str = "llama",
) -> Model:
    """Load a GGUF model as a `tribit.Model`; with no path, the embedded default model.

    n_threads: worker threads (default: the CPUs this process may use). n_ctx: context
    length per sequence (default: the trained one, at most 4096). kv_type: "f16" (default)
    or "f32" KV cache. n_seq: sequence slots (batched serving, several conversations kept
    warm). isa: force a kernel variant ("generic", "avx2", ...). head_type: "q8_0" or
    "q6_k" repacks an F32/F16/BF16 head at load (faster, slightly lossy); None keeps the
    file's type, lossless. group_mode: how Q2_0 / Q1_0 weights compute, "llama" (Q8_0
    activations as llama.cpp) or "float" (the float-activation reference).
    """
    return runtime.load(
        path,
        n_threads=n_threads,
        n_ctx=n_ctx,
        kv_type=kv_type,
        n_seq=n_seq,
        isa=isa,
        head_type=head_type,
        cls=Model,
        group_mode=group_mode,
    )
