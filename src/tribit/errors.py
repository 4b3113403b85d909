"""Exceptions raised by tribit."""


class TribitError(Exception):
    """Base class of tribit's own errors."""


class FormatError(TribitError, ValueError):
    """A model file (GGUF, safetensors, config) is malformed or unsupported.

    The message names what is wrong (key, tensor, offset) so that a user can act on it.
    """


class ModelError(TribitError, ValueError):
    """A model's tensors or hyper-parameters are missing or inconsistent."""
