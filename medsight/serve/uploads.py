"""Reading request bodies with a size limit, shared by every upload route."""

from __future__ import annotations

from fastapi import Request

from medsight.serve.errors import HttpError


async def read_body(request: Request, limit: int, advice: str = "") -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (declared or streamed)."""
    too_large = HttpError(413, f"the upload is larger than this server's limit of {limit} bytes{advice}.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
