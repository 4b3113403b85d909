"""Request bodies, validated (OpenAI's field names and ranges)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from ..sampling import SamplerParams

MAX_TOKENS_LIMIT = 1 << 20


def find_lone_surrogate(value: Any) -> str | None:
    """The path of the first string (or key) in a parsed JSON body that is not valid
    Unicode (a lone surrogate such as "\ud800"), or None. Iterative: no recursion limit."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        elif isinstance(v, dict):
            for k, x in v.items():
                sub = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and find_lone_surrogate(k) is not None:
                    return path or "body"
                stack.append((sub, x))
        elif isinstance(v, list):
            stack.extend((f"{path}.{i}", x) for i, x in enumerate(v))
    return None


class Body(BaseModel):
    """A request body: unknown fields ignored; strings must be valid Unicode (a lone
    surrogate escaped in JSON is a 400, not a 500 deep in the tokenizer)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        where = find_lone_surrogate(data)
        if where is not None:
            raise ValueError(f"{where} is not valid Unicode (a lone surrogate)")
        return data


# Numbers and flags are strict: "5" and true are not a max_tokens (pydantic's lax mode would
# take them); an int is fine where a float is expected.
class SamplingFields(Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT, strict=True)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0, strict=True)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, strict=True)
    top_k: int = Field(default=0, ge=0, le=1 << 20, strict=True)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0, strict=True)
    typical_p: float = Field(default=1.0, gt=0.0, le=1.0, strict=True)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, strict=True)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0, strict=True)
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=10.0, strict=True)
    repeat_last_n: int = Field(default=64, ge=-1, le=1 << 20, strict=True)
    seed: int | None = Field(default=None, ge=0, lt=1 << 63, strict=True)
    stop: str | list[str] | None = None
    stream: bool = Field(default=False, strict=True)
    stream_options: dict | None = None
    n: int = Field(default=1, ge=1, le=1, strict=True)
    logit_bias: dict[str, float] | None = None
    # llama-server's: reuse the KV rows a free slot already holds for the prompt's prefix
    cache_prompt: bool = Field(default=True, strict=True)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop strings")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v is not None:
            for k, b in v.items():
                # ASCII digits only: "²".isdigit() is True and int("²") raises
                if not (k.isascii() and k.isdigit() and len(k) <= 10):
                    raise ValueError(f"logit_bias keys must be token ids, got {k!r}")
                if not -100 <= b <= 100:
                    raise ValueError("logit_bias values must be in [-100, 100]")
        return v

    def limit(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )

    def sampling(self) -> SamplerParams:
        """The request's sampling parameters (OpenAI's defaults: temperature 1, no top-k)."""
        return SamplerParams(**{name: getattr(self, name) for name in SAMPLING_FIELDS})

    def options(self) -> dict[str, Any]:
        """The generation options of the request (`BatchGenerator.insert` keywords)."""
        return {
            "max_tokens": self.limit(),
            "sampling": self.sampling(),
            "stop": self.stop,
            "reuse_cache": self.cache_prompt,
        }

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


SAMPLING_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
)


class CompletionRequest(SamplingFields):
    prompt: str | list[StrictInt]


class ChatRequest(SamplingFields):
    # checked and normalised by the library (tribit.chat.normalize_messages: one role set)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=4096)


class TokenizeRequest(Body):
    content: str
    add_special: bool = Field(default=False, strict=True)
    parse_special: bool = Field(default=True, strict=True)


class DetokenizeRequest(Body):
    tokens: list[StrictInt] = Field(max_length=1 << 20)


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the inputs of one request


class EmbeddingRequest(Body):
    """OpenAI's embeddings request: a string, strings, token ids, or lists of token ids."""

    model: str | None = None
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=1 << 20, strict=True)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, v):
        if isinstance(v, list) and len(v) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return v

    def inputs(self) -> list[str | list[int]]:
        """The inputs as a list: texts, or token-id lists."""
        v = self.input
        if isinstance(v, str):
            return [v]
        if v and all(isinstance(x, int) for x in v):
            return [list(v)]  # one input given as token ids
        return list(v)
