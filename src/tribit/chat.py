"""Chat: prompts from chat templates and multi-turn sessions that reuse the KV cache.

One place for what a chat prompt is: the messages are normalised once
(`tokenizer.chat.normalize_messages`: roles system, developer, user, assistant, tool), the
template is the file's own (sandboxed, budgeted) or a built-in one, only the template's own
markers become control tokens, and BOS appears once. The library, the CLI and the server
all build chat prompts with `chat_prompt_tokens`.

Multi-turn reuse: every turn re-renders the whole conversation and tokenizes it; the
model's slot records (`Model.cached_tokens`) find the longest prefix already in a KV slot
(system prompt, earlier turns) and only the new tail is computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import ContextLengthError
from .formats.keys import TokenizerKey
from .generation import GenerationChunk, LogitsProcessor, Sampler, stream_generate
from .sampling import SamplerParams, make_logits_processors, make_sampler
from .tokenizer.chat import builtin_name, encode_chat, normalize_messages, render_chat
from .tokenizer.template_worker import TemplateBudgetError

__all__ = [
    "ChatSession",
    "TemplateBudgetError",
    "chat_prompt_tokens",
    "chat_template",
    "normalize_messages",
    "render_messages",
]


def chat_template(model) -> str | None:
    """The model file's own Jinja chat template, or None where a built-in one applies (no
    template in the file, or bitnet.cpp's "BITNET" placeholder)."""
    tmpl = model.metadata.get(TokenizerKey.CHAT_TEMPLATE)
    if not isinstance(tmpl, str) or builtin_name(tmpl) is not None:
        return None
    return tmpl


def _special_texts(model) -> dict[str, str]:
    """The BOS and EOS texts a template may print."""
    tok = model.tokenizer
    tokens = model.metadata.get(TokenizerKey.TOKENS)

    def text(token_id: int | None) -> str:
        if token_id is None or token_id < 0 or not tokens or token_id >= len(tokens):
            return ""
        return str(tokens[token_id])

    return {"bos_token": text(tok.bos_id), "eos_token": text(tok.eos_id)}


def render_messages(
    model, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
) -> str:
    """The conversation as prompt text, with the model's chat template (sandboxed Jinja)."""
    return render_chat(
        normalize_messages(messages),
        template=chat_template(model),
        add_generation_prompt=add_generation_prompt,
        **_special_texts(model),
    )


def chat_prompt_tokens(
    model, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of the rendered conversation. Only the template's own markers become
    control tokens: message contents are encoded as plain text, so a user cannot fake a
    turn by writing `<|eot_id|>` (tokenizer.chat.encode_chat). BOS once: the tokenizer
    adds it unless the template already wrote it."""
    tok = model.tokenizer
    ids = encode_chat(
        tok,
        normalize_messages(messages),
        template=chat_template(model),
        add_generation_prompt=add_generation_prompt,
        **_special_texts(model),
    )
    # a template that writes the BOS token under another spelling must not give a second one
    if tok.bos_id is not None and len(ids) > 1 and ids[0] == ids[1] == tok.bos_id:
        ids = ids[1:]
    return ids


class ChatSession:
    """A conversation with a model; each turn computes only the new tokens.

    Sampling (a SamplerParams as `sampling`, or its fields as keywords; or an explicit
    `sampler` / `logits_processors`) is built once for the whole session: a seeded session
    draws one reproducible stream across turns. A turn may override max_tokens, stop or
    sampling fields (that turn then samples with its own sampler). seq: the KV slot (None:
    the free slot holding the longest prefix, which is this conversation's when nobody
    else used it). When the conversation outgrows the context, the oldest turns (not the
    system prompt) are dropped if `drop_old_turns`, else ContextLengthError is raised.
    """

    def __init__(
        self,
        model,
        system: str | None = None,
        seq: int | None = None,
        drop_old_turns: bool = True,
        max_tokens: int | None = None,
        stop: Sequence[str] | str | None = None,
        sampling: SamplerParams | None = None,
        sampler: Sampler | None = None,
        logits_processors: Sequence[LogitsProcessor] | None = None,
        **params: Any,
    ):
        self.model = model
        self.seq = seq
        self.drop_old_turns = drop_old_turns
        self.max_tokens = max_tokens
        self.stop = stop
        self.sampling = (sampling or SamplerParams()).replace(**params)
        self._sampler = sampler or make_sampler(self.sampling)
        self._processors = (
            list(logits_processors)
            if logits_processors is not None
            else make_logits_processors(self.sampling)
        )
        self.messages: list[dict[str, str]] = []
        self.last: GenerationChunk | None = None  # final chunk (statistics) of the last turn
        self.reset(system)

    def reset(self, system: str | None = None) -> None:
        """Start a new conversation (the KV cache is reused as far as it still matches)."""
        self.messages = [{"role": "system", "content": system}] if system else []

    def stream(self, content: str, **overrides: Any) -> Iterator[GenerationChunk]:
        """Send a user message; yield the answer's chunks. The answer (as far as it got,
        also when the caller stops early or Ctrl-C interrupts it) joins the history."""
        self.messages.append({"role": "user", "content": content})
        max_tokens = overrides.pop("max_tokens", self.max_tokens)
        stop = overrides.pop("stop", self.stop)
        sampler = overrides.pop("sampler", None)
        processors = overrides.pop("logits_processors", None)
        if overrides:  # this turn samples differently
            params = self.sampling.replace(**overrides)
            sampler = sampler or make_sampler(params)
            if processors is None:
                processors = make_logits_processors(params)
        sampler = sampler or self._sampler
        processors = processors if processors is not None else self._processors
        try:
            tokens = self._fit(max_tokens)
            it = stream_generate(
                self.model,
                tokens,
                max_tokens,
                sampler=sampler,
                logits_processors=processors,
                stop=stop,
                seq=self.seq,
            )
        except BaseException:
            self.messages.pop()
            raise
        return self._run(it)

    def _run(self, it: Iterator[GenerationChunk]) -> Iterator[GenerationChunk]:
        pieces: list[str] = []
        try:
            for chunk in it:
                pieces.append(chunk.text)
                if chunk.finish_reason is not None:
                    self.last = chunk
                yield chunk
        finally:
            self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def send(self, content: str, **overrides: Any) -> str:
        """Send a user message; return the whole answer."""
        return "".join(c.text for c in self.stream(content, **overrides))

    def _fit(self, max_tokens: int | None) -> list[int]:
        n_ctx = int(self.model.n_ctx)
        room = min(n_ctx // 4, max_tokens if max_tokens and max_tokens > 0 else 256)
        while True:
            tokens = chat_prompt_tokens(self.model, self.messages)
            if len(tokens) + room <= n_ctx or not self.drop_old_turns:
                break
            first = 1 if self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:
                break  # only the new message is left: nothing more to drop
            del self.messages[first]  # the oldest message, then up to the next user turn
            while len(self.messages) - first > 1 and self.messages[first]["role"] != "user":
                del self.messages[first]
        if len(tokens) > n_ctx:
            raise ContextLengthError(len(tokens), n_ctx)
        return tokens
