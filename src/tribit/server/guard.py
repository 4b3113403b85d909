"""API key and request body limit, as plain ASGI middleware."""

from __future__ import annotations

import hmac

from .errors import error

PUBLIC_PATHS = {"/health", "/", "/static/app.js", "/static/style.css"}


class GuardMiddleware:
    """API key (constant-time compare) and request body size limit.

    The body is read here, counted as it arrives and replayed to the app, so a
    chunked upload (no Content-Length) cannot outgrow the limit either; after the
    replay, the app's `receive` reaches the server's again and sees disconnects.
    """

    def __init__(self, app, settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if s.api_key and scope["path"] not in PUBLIC_PATHS and scope["method"] != "OPTIONS":
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), s.api_key.encode()):
                return await error(
                    401,
                    "invalid or missing API key",
                    "invalid_api_key",
                    etype="authentication_error",
                )(scope, receive, send)
        too_large = error(
            413, f"request body larger than {s.max_body_bytes} bytes", "body_too_large"
        )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client left before sending it all
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > s.max_body_bytes:
                return await too_large(scope, receive, send)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)
