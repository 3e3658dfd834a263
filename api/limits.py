"""Request body limits, one table for every route, enforced while the body streams.

A body over its route's limit is refused with 413 as soon as the limit is crossed (or at once, when a
Content-Length says so), whether it has a Content-Length or is chunked, so no route can read a large
body whole. Multipart file parts are spooled to disk by Starlette past 1 MiB, and uploads go on to S3
from there in parts (jobs.adapters.storage.S3BlobStore.put_file): memory stays bounded whatever the size.

Why not Starlette's own ``max_body_size`` (1.10): it answers its 413 in plain text from inside the
route, past the app's exception handlers, so the documented error shape ``{"error": {...}}`` would be
lost. This middleware counts the same way and raises an HTTPException that the handlers render.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.config import Settings

JSON_BODY_LIMIT = 16 * 1024 * 1024  # a JSON job of 50,000 items is about 6 MiB
SMALL_BODY_LIMIT = 1024 * 1024  # every other route: a batch create, a cancel, ...
MULTIPART_SLACK = 1024 * 1024  # a file upload's envelope (boundaries, headers, the purpose field)


class BodyTooLarge(HTTPException):
    code = "source_too_large"

    def __init__(self, limit: int, declared: int | None = None) -> None:
        said = f"is {declared} bytes" if declared is not None else "is over the limit"
        super().__init__(413, f"request body {said}; the limit is {limit} bytes")


def body_limit(settings: Settings, method: str, path: str, content_type: str) -> int:
    """The most bytes a request to ``path`` may send."""
    if method == "POST" and path.rstrip("/") == "/v1/jobs":
        multipart = content_type.startswith("multipart/form-data")
        return settings.limits.max_request_bytes if multipart else JSON_BODY_LIMIT
    if method == "POST" and path.rstrip("/") == "/v1/files":
        return settings.limits.max_upload_bytes + MULTIPART_SLACK
    return SMALL_BODY_LIMIT


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = body_limit(self.settings, scope["method"], scope["path"], headers.get("content-type", ""))
        declared = _int_or_none(headers.get("content-length"))
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit, declared)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, capped, send)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
