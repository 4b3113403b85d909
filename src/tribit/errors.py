"""Exceptions raised by tribit."""


class TribitError(Exception):
    """Base class of tribit's own errors."""


class TribitWarning(UserWarning):
    """Base class of tribit's warnings."""


class ContextWarning(TribitWarning):
    """n_ctx is above the model's trained context: positions past it were never trained."""


class FormatError(TribitError, ValueError):
    """A model file (GGUF, safetensors, config) is malformed or unsupported.

    The message names what is wrong (key, tensor, offset) so that a user can act on it.
    """


class ModelError(TribitError, ValueError):
    """A model's tensors or hyper-parameters are missing or inconsistent."""


class ContextLengthError(TribitError, ValueError):
    """The prompt does not fit in the model's context (n_ctx positions per sequence).

    Carries `n_prompt_tokens` and `n_ctx`, like llama-server's `exceed_context_size_error`.
    """

    def __init__(self, n_prompt_tokens: int, n_ctx: int):
        super().__init__(
            f"the prompt has {n_prompt_tokens} tokens, more than the context size n_ctx="
            f"{n_ctx}; shorten it or load the model with a larger n_ctx"
        )
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx
