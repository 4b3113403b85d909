"""Text generation: the batch-first core (`BatchGenerator`) and the one-sequence API on it
(`generate_step` -> `stream_generate` -> `generate`)."""

from ..errors import ContextLengthError
from .batch import (
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    BatchGenerator,
    GenerationChunk,
    LogitsProcessor,
    Sampler,
    check_max_tokens,
    check_prompt,
)
from .stop import StopMatcher
from .stream import generate, generate_step, sampling_params, stream_generate, tokenize_prompt

__all__ = [
    "FINISH_ERROR",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "BatchGenerator",
    "ContextLengthError",
    "GenerationChunk",
    "LogitsProcessor",
    "Sampler",
    "StopMatcher",
    "check_max_tokens",
    "check_prompt",
    "generate",
    "generate_step",
    "sampling_params",
    "stream_generate",
    "tokenize_prompt",
]
