"""What the routes share: the settings, and the model and scheduler once loaded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TribitError

log = logging.getLogger("tribit.serve")


@dataclass
class ServerSettings:
    model_path: str | None
    n_parallel: int = 4
    n_ctx: int | None = None
    n_threads: int | None = None
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_queue: int = 64
    max_body_bytes: int = 4 << 20
    model_name: str | None = None
    head_type: str | None = None  # tribit.load's: repack the head at load
    # the pooling of /v1/embeddings: None: the file's (a file without one is generative)
    pooling: str | None = None
    stream_interval_ms: float = 0.0  # > 0: at most one SSE text event per interval


class State:
    """The loaded model and its engine; `load_error` / `template_error` say what failed."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.model = None
        self.engine = None
        self.load_error: str | None = None
        self.template_error: str | None = None
        self.t_start = time.time()

    def load(self) -> None:
        import tribit

        from .engine import Engine

        s = self.settings
        try:
            self.model = tribit.load(
                s.model_path,
                n_threads=s.n_threads,
                n_ctx=s.n_ctx,
                n_seq=s.n_parallel,
                head_type=s.head_type,
            )
            self.model.tokenizer  # noqa: B018 - build it before serving
            self.check_template()
            self.engine = Engine(self.model, max_queue=s.max_queue)
            self.engine.start()
        except Exception as e:  # reported by /health, and on the console
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("the model failed to load: %s", self.load_error)

    def check_template(self) -> None:
        """Render the model's chat template once on a sample conversation, in its budget.
        A template that runs past the budget is disabled (chat requests get a 500 saying
        so, at once); one that merely raises is reported and still used."""
        from ..chat import TemplateBudgetError, chat_prompt_tokens, chat_template

        if chat_template(self.model) is None:
            return
        sample = [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hello!"},
        ]
        try:
            chat_prompt_tokens(self.model, sample)
        except TemplateBudgetError as e:
            self.template_error = f"the model's chat template is disabled: {e}"
            log.error("%s", self.template_error)
        except TribitError as e:
            log.warning("the model's chat template fails on a sample conversation: %s", e)

    @property
    def pooling(self) -> str | None:
        """The pooling /v1/embeddings uses: --pooling, else the file's (None: none)."""
        return self.settings.pooling or (self.model.config.pooling if self.model else None)

    @property
    def embedding_only(self) -> bool:
        """The file defines a pooling type: an embedding model, refused by completions
        (BitNet-embedding files have no head; a token_embd to tie one to is an input table)."""
        return self.model is not None and self.model.config.pooling not in (None, "none")

    @property
    def model_id(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        return Path(str(self.model.path)).stem if self.model is not None else "tribit"
