"""``/ws``: the connected browser tabs and API clients, and the ordered stream of messages to them.

Messages are ``{"type": event, "data": {...}}`` JSON frames (comfyui.md §3.4). Any thread may
:meth:`Clients.post`; one task on the event loop sends the messages in the order they were
posted, to one client (``sid``) or to all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)


class Clients:
    def __init__(self, status, feature_flags: dict):
        self._status = status  # () -> the "status" payload {"exec_info": {"queue_remaining": n}}
        self.feature_flags = feature_flags
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue | None = None
        self._sender: asyncio.Task | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_all())

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()

    def post(self, event: str, data: dict, sid: str | None = None) -> None:
        """Queue a message for client ``sid`` (dropped if it is not connected) or for everyone."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, (event, data, sid))

    def broadcast_status(self) -> None:
        self.post("status", {"status": self._status()})

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws?clientId=...``: greet with ``status`` + ``sid``, answer ``feature_flags``."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        previous = self.sockets.get(sid)
        self.sockets[sid] = ws
        if previous is not None:
            await previous.close()
        try:
            await ws.send_json({"type": "status", "data": {"status": self._status(), "sid": sid}})
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    incoming = json.loads(message.data)
                except ValueError:
                    continue  # clients send nothing we must understand
                if isinstance(incoming, dict) and incoming.get("type") == "feature_flags":
                    await ws.send_json({"type": "feature_flags", "data": self.feature_flags})
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    async def _send_all(self) -> None:
        while True:
            event, data, sid = await self._outbox.get()
            text = json.dumps({"type": event, "data": data}, default=str)
            targets = [self.sockets[sid]] if sid in self.sockets else [] if sid else list(self.sockets.values())
            for ws in targets:
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError) as e:  # closed while we were sending
                    log.debug("ws: dropped a %s message: %s", event, e)
