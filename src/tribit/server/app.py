"""The HTTP application: OpenAI-compatible routes over the batching engine.

    app = create_app(ServerSettings(model_path="model.gguf"))

The model loads in the background at startup (/health answers 503 "loading" meanwhile);
the engine stops at shutdown. Routes live in `routes`, errors in `errors`, the API key and
body limit in `guard`, shared state in `state`.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .errors import HANDLERS
from .guard import GuardMiddleware
from .routes import ROUTES
from .state import ServerSettings, State

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings, load_in_background: bool = True) -> FastAPI:
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if load_in_background:
            threading.Thread(target=state.load, daemon=True).start()
        else:
            state.load()
        yield
        if state.engine is not None:
            state.engine.shutdown()

    app = FastAPI(title="tribit", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.tribit = state
    for path, handler, methods in ROUTES:
        app.add_api_route(path, handler, methods=methods)
    for exc, handler in HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(GuardMiddleware, settings=settings)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=not wildcard,  # never wildcard with credentials
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
