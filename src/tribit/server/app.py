"""The HTTP application: OpenAI-compatible routes over the batching engine.

    app = create_app(ServerSettings(model_path="model.gguf"))

The model loads in the background at startup (/health answers 503 "loading" meanwhile);
the engine stops at shutdown. A host that loads the model itself first (a Ray Serve
replica: tribit.integrations.ray_serve) passes its loaded `State` instead. Routes live in
`routes`, errors in `errors`, the API key and body limit in `guard`, shared state in
`state`.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .errors import HANDLERS
from .guard import GuardMiddleware
from .routes import ROUTES
from .state import ServerSettings, State

__all__ = ["ServerSettings", "State", "create_app"]


def create_app(
    settings: ServerSettings, load_in_background: bool = True, state: State | None = None
) -> FastAPI:
    """The app for `settings`. With `state` (loaded by the caller: `State.load()`) the app
    serves that model and its settings instead of loading one at startup. Either way it
    stops the engine at shutdown."""
    if state is None:
        state = State(settings)
    settings = state.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.engine is not None or state.load_error is not None:
            pass  # loaded by the caller
        elif load_in_background:
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
