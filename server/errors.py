"""Error answers in ComfyUI's shape: ``{"error": {type, message, details, extra_info}, "node_errors": {}}``
(what ``POST /prompt`` answers, so clients and the frontend read every 4xx/5xx the same way)."""

from __future__ import annotations

import json
import logging
import urllib.parse

from aiohttp import web

from ..runner.errors import error

log = logging.getLogger(__name__)

_TYPES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "request_too_large"}


class HTTPError(Exception):
    """Raised by a handler; the middleware answers ``status`` with a ComfyUI-shaped error."""

    def __init__(self, status: int, message: str, details: str = "", type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details
        self.type = type or _TYPES.get(status, "error")


def json_error(status: int, type: str, message: str, details: str = "", node_errors: dict | None = None):
    return web.json_response({"error": error(type, message, details), "node_errors": node_errors or {}},
                             status=status)


async def read_json(request: web.Request):
    """The body as JSON; 400 ``invalid_json`` if it is not, 413 if it is over the size limit."""
    body = await request.read()
    try:
        return json.loads(body)
    except ValueError as e:
        raise HTTPError(400, "The request body is not valid JSON", str(e), "invalid_json") from e


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except HTTPError as e:
        return json_error(e.status, e.type, e.message, e.details)
    except web.HTTPRequestEntityTooLarge as e:  # e.text names the limit and the size sent
        return json_error(413, "request_too_large", "The request body is too large", e.text)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return json_error(e.status, _TYPES.get(e.status, "error"), e.reason, e.text or "")
    except Exception as e:  # a bug in a handler: answer 500, keep serving
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "server_error", "Internal server error", f"{type(e).__name__}: {e}")


@web.middleware
async def same_origin_middleware(request: web.Request, handler):
    """Refuse requests a browser sends from another site's page (its ``Origin`` names another
    host than the one it asks), so a web page cannot queue prompts or write files on a local
    server; clients that send no ``Origin`` (scripts, API clients) are not affected."""
    origin = request.headers.get("Origin")
    if origin and urllib.parse.urlsplit(origin).netloc.lower() != request.host.lower():
        return json_error(403, "forbidden", "Cross-origin request refused",
                          f"Origin {origin} is not this server ({request.host})")
    return await handler(request)
