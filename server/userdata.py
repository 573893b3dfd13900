"""Users, settings and user files, as ComfyUI's single-user mode keeps them: everything under
``<user_dir>/default/`` (settings in ``comfy.settings.json``, saved workflows in ``workflows/``),
so they survive a restart."""

from __future__ import annotations

import json
import os
import shutil

from aiohttp import web

from .errors import HTTPError, read_json
from .files import USER_TYPES, BadName, UnsafePath, file_response, inside, write_atomic

USER = "default"
SETTINGS_FILE = "comfy.settings.json"
FOLDERS = ("workflows", "subgraphs")  # listed by the frontend at startup
# What a missing user file reads as, for the files every page load asks for (the user's own
# stylesheet, saved node templates), so a fresh user folder answers them without a 404.
DEFAULT_FILES = {"user.css": ("text/css", b""), "comfy.templates.json": ("application/json", b"[]")}


class UserData:
    def __init__(self, user_dir):
        self.root = os.path.realpath(os.path.join(user_dir, USER))
        for folder in FOLDERS:
            os.makedirs(os.path.join(self.root, folder), exist_ok=True)

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/users", self.get_users),
            ("POST", "/users", self.post_users),
            ("GET", "/settings", self.get_settings),
            ("POST", "/settings", self.post_settings),
            ("GET", "/settings/{id}", self.get_setting),
            ("POST", "/settings/{id}", self.post_setting),
            ("GET", "/userdata", self.list_files),
            ("GET", "/userdata/{file}", self.get_file),
            ("POST", "/userdata/{file}", self.post_file),
            ("DELETE", "/userdata/{file}", self.delete_file),
            ("POST", "/userdata/{file}/move/{dest}", self.move_file),
        ]

    # users / settings

    async def get_users(self, request):
        return web.json_response({"storage": "server", "migrated": True})

    async def post_users(self, request):
        raise HTTPError(400, "WanRT serves a single user; there are no users to create")

    def settings(self) -> dict:
        try:
            with open(os.path.join(self.root, SETTINGS_FILE), encoding="utf-8") as f:
                settings = json.load(f)
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def _store_settings(self, settings: dict) -> None:
        write_atomic(os.path.join(self.root, SETTINGS_FILE), json.dumps(settings, indent=4).encode())

    async def get_settings(self, request):
        return web.json_response(self.settings())

    async def post_settings(self, request):
        changes = await read_json(request)
        if not isinstance(changes, dict):
            raise HTTPError(400, "settings must be a JSON object {id: value}")
        self._store_settings({**self.settings(), **changes})
        return web.Response()

    async def get_setting(self, request):
        return web.json_response(self.settings().get(request.match_info["id"]))

    async def post_setting(self, request):
        value = await read_json(request)
        self._store_settings({**self.settings(), request.match_info["id"]: value})
        return web.Response()

    # files

    def _path(self, relative: str) -> str:
        try:
            return inside(self.root, relative)
        except UnsafePath as e:
            raise HTTPError(403, f"user file {relative!r} is outside the user folder") from e
        except BadName as e:
            raise HTTPError(400, "Bad user file name", str(e)) from e

    def _info(self, path: str) -> dict:
        stat = os.stat(path)
        return {"path": os.path.relpath(path, self.root).replace(os.sep, "/"), "size": stat.st_size,
                "modified": int(stat.st_mtime * 1000), "created": int(stat.st_ctime * 1000)}

    async def list_files(self, request):
        """``?dir=workflows&recurse=true&full_info=true&split=false`` (paths relative to ``dir``)."""
        if not request.query.get("dir"):
            raise HTTPError(400, "the 'dir' query parameter is required")
        directory = self._path(request.query["dir"])
        if not os.path.isdir(directory):
            raise HTTPError(404, f"user folder {request.query['dir']!r} does not exist")
        recurse = request.query.get("recurse") == "true"
        full_info = request.query.get("full_info") == "true"
        split = request.query.get("split") == "true"
        found = []
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                relative = os.path.relpath(path, directory).replace(os.sep, "/")
                if full_info:
                    found.append({**self._info(path), "path": relative})
                elif split:
                    found.append([relative, *relative.split("/")])
                else:
                    found.append(relative)
            if not recurse:
                break
        return web.json_response(found)

    async def get_file(self, request):
        return self._file(request.match_info["file"])

    async def get_user_css(self, request):
        """``/user.css`` (no prefix): the page links it next to ``/api/userdata/user.css``."""
        return self._file("user.css")

    def _file(self, relative: str) -> web.StreamResponse:
        path = self._path(relative)
        if os.path.isfile(path):
            return file_response(path, USER_TYPES, **{"Cache-Control": "no-cache"})
        if relative in DEFAULT_FILES:
            content_type, body = DEFAULT_FILES[relative]
            return web.Response(body=body, content_type=content_type)
        raise HTTPError(404, f"no user file {relative!r}")

    async def post_file(self, request):
        """Store the raw body; 409 if it exists and ``overwrite=false``. Answers the relative path,
        or its ``{path, size, modified}`` with ``full_info=true``."""
        path = self._path(request.match_info["file"])
        if os.path.exists(path) and request.query.get("overwrite") == "false":
            raise HTTPError(409, f"user file {request.match_info['file']!r} already exists")
        if os.path.isdir(path):
            raise HTTPError(409, f"{request.match_info['file']!r} is a folder")
        body = await request.read()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, body)
        return self._answer(path, request)

    async def delete_file(self, request):
        path = self._path(request.match_info["file"])
        if not os.path.isfile(path):
            raise HTTPError(404, f"no user file {request.match_info['file']!r}")
        os.remove(path)
        return web.Response(status=204)

    async def move_file(self, request):
        source, dest = self._path(request.match_info["file"]), self._path(request.match_info["dest"])
        if not os.path.isfile(source):
            raise HTTPError(404, f"no user file {request.match_info['file']!r}")
        if os.path.exists(dest) and request.query.get("overwrite") != "true":
            raise HTTPError(409, f"user file {request.match_info['dest']!r} already exists")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(source, dest)
        return self._answer(dest, request)

    def _answer(self, path: str, request) -> web.Response:
        if request.query.get("full_info") == "true":
            return web.json_response(self._info(path))
        return web.json_response(os.path.relpath(path, self.root).replace(os.sep, "/"))

