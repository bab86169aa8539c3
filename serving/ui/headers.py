"""Response headers for every /ui answer: no framing (clickjacking), scripts and forms only from the service
itself, no content sniffing, no referrer to other sites, and no caching of pages that hold personal data."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# pygal's SVG carries inline <style> (allowed) and an inline config <script> it only needs for tooltips (blocked).
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")


class DashboardHeaders:
    """Pure ASGI (no buffering), so the API's streamed answers pass through untouched."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/ui") -> None:
        self._app = app
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self._prefix or path.startswith(self._prefix + "/")):
            await self._app(scope, receive, send)
            return
        static = path.startswith(self._prefix + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(HEADERS)
                if not static:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, with_headers)
