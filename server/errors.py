"""Error answers in ComfyUI's shape: ``{"error": {type, message, details, extra_info}, "node_errors": {}}``
(what ``POST /prompt`` answers, so clients and the frontend read every 4xx/5xx the same way)."""

from __future__ import annotations

import ipaddress
import json
import logging
import urllib.parse

from aiohttp import web

from ..runner.errors import error

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 100  # a workflow with subgraphs in subgraphs nests a few dozen levels
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
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
    """The body as JSON; 400 ``invalid_json`` if it is not or nests deeper than MAX_JSON_DEPTH,
    413 if it is over the size limit."""
    body = await request.read()
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise HTTPError(400, "The request body is not valid JSON", f"{type(e).__name__}: {e}", "invalid_json") from e
    if json_depth(value) > MAX_JSON_DEPTH:
        raise HTTPError(400, "The request body is not valid JSON",
                        f"it nests deeper than {MAX_JSON_DEPTH} levels", "invalid_json")
    return value


def json_depth(value) -> int:
    """How deeply lists and objects nest in ``value`` (0 for a scalar); without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, depth = todo.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo += [(child, depth + 1) for child in children if isinstance(child, (dict, list))]
    return deepest


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


def loopback_host_middleware(allowed_hosts: frozenset[str] = frozenset()):
    """Refuse (403) a request that arrived on a loopback address unless its ``Host`` names a
    loopback host (``localhost``, ``127.0.0.1``, ``[::1]``, ...) or one of ``allowed_hosts``.

    A page on ``evil.example`` whose DNS answer is switched to 127.0.0.1 (DNS rebinding) reaches a
    local server from the browser with ``Host`` and ``Origin`` both ``evil.example``, so the
    same-origin check alone cannot tell it apart; the ``Host`` can. A server reached over another
    interface (``--listen``) is already exposed to that network and is not checked."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname and _is_loopback(sockname[0]):
            name = _hostname(request.host)
            if not (_is_loopback(name) or name in LOOPBACK_NAMES or name.endswith(".localhost")
                    or name in allowed_hosts):
                return json_error(403, "forbidden", "Host not allowed",
                                  f"Host {request.host!r} is not a loopback name; a request for another name "
                                  "on a loopback address is refused (DNS rebinding). To serve behind a "
                                  "reverse proxy under that name, start with --allow-host NAME")
        return await handler(request)
    return middleware


def _hostname(host: str) -> str:
    """``Host`` header → lowercase host name without port (``[::1]:8188`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.partition("%")[0]).is_loopback
    except ValueError:
        return False
