"""The aiohttp application: ComfyUI's HTTP routes (each also under ``/api``) on top of the runner,
and the official frontend's static files at ``/`` (comfyui.md §3.3, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import nodes
from ..nodes import host as hosts
from ..runner import Executor, PromptError, Validation
from ..runner.errors import error
from . import files, object_info, system, templates
from .clients import Clients
from .errors import HTTPError, error_middleware, loopback_host_middleware, read_json, same_origin_middleware
from .queue import JOB_STATUSES, Job, PromptQueue
from .userdata import UserData
from .worker import Worker

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_BODY = 100 * MiB  # ComfyUI's default --max-upload-size: any request body, uploads included
# Keys of extra_data the frontend fills with comfy.org credentials: never stored or echoed.
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")
# The user setting that lets POST /upload/image with type=output&overwrite=true replace an output.
ALLOW_OUTPUT_OVERWRITE = "WanRT.Upload.AllowOverwritingOutputs"


def frontend_dir() -> str:
    """The static files of the installed ``comfyui-frontend-package``."""
    try:
        import comfyui_frontend_package
    except ImportError as e:
        raise ImportError("the frontend is not installed: pip install 'comfyui-wanrt[server]' "
                          f"(comfyui-frontend-package=={system.FRONTEND_VERSION})") from e
    return os.path.join(os.path.dirname(comfyui_frontend_package.__file__), "static")


class PromptServer:
    """Everything one server holds: the host (model folders, input/output/temp), the queue, the
    worker with its Executor, the WebSocket clients and the user folder.

    ``node_classes`` / ``display_names`` default to the package's node registry.
    ``max_body`` bounds every request body (JSON and uploads): larger ones get 413.
    ``allowed_hosts``: more ``Host`` names than the loopback ones that requests arriving on a
    loopback address may carry (a reverse proxy's name); see :func:`errors.loopback_host_middleware`.
    """

    def __init__(self, host: hosts.HeadlessHost, *, user_dir, node_classes: Mapping[str, type] | None = None,
                 display_names: Mapping[str, str] | None = None, max_body: int = DEFAULT_MAX_BODY,
                 static_dir: str | None = None, allowed_hosts: Iterable[str] = ()):
        self.host = host
        self.allowed_hosts = frozenset(name.lower() for name in allowed_hosts)
        self.node_classes = node_classes if node_classes is not None else nodes.runner_node_classes()
        self.display_names = display_names if display_names is not None else nodes.runner_display_names()
        self.max_body = max_body
        self.static_dir = static_dir or frontend_dir()
        self.feature_flags = {"supports_preview_metadata": False, "max_upload_size": max_body}
        self.validator = Executor(host, self.node_classes)  # converts and validates; runs nothing
        self.queue = PromptQueue()
        self.clients = Clients(lambda: {"exec_info": {"queue_remaining": self.queue.remaining()}},
                               self.feature_flags)
        self.worker = Worker(host, self.node_classes, self.queue, self.clients)
        self.user = UserData(user_dir)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[
            loopback_host_middleware(self.allowed_hosts), same_origin_middleware, error_middleware])
        for method, path, handler in self.routes() + self.user.routes() + templates.routes():
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        for method, path, handler in self.internal_routes():
            app.router.add_route(method, path, handler)
        app.router.add_static("/", self.static_dir)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._stop)
        return app

    async def _start(self, app) -> None:
        await self.clients.start()
        self.worker.start()

    async def _stop(self, app) -> None:
        await asyncio.to_thread(self.worker.stop)
        await self.clients.stop()

    def routes(self) -> list[tuple[str, str, object]]:
        return [
            ("GET", "/", self.index),
            ("GET", "/ws", self.clients.handle),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_entry),
            ("POST", "/history", self.post_history),
            ("GET", "/jobs", self.get_jobs),
            ("GET", "/jobs/{job_id}", self.get_job),
            ("POST", "/jobs/cancel", self.cancel_jobs),
            ("POST", "/jobs/{job_id}/cancel", self.cancel_job),
            ("POST", "/interrupt", self.interrupt),
            ("POST", "/free", self.free),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_node_info),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/models", self.model_types),
            ("GET", "/models/{folder}", self.model_names),
            ("GET", "/experiment/models", self.model_folders),
            ("GET", "/experiment/models/{folder}", self.model_files),
            # What the frontend asks for at startup that WanRT has nothing of.
            ("GET", "/embeddings", _constant([])),
            ("GET", "/extensions", _constant([])),
            ("GET", "/i18n", _constant({})),
            ("GET", "/node_replacements", _constant({})),
            ("GET", "/global_subgraphs", _constant({})),
        ]

    def internal_routes(self) -> list[tuple[str, str, object]]:
        """No ``/api`` prefix, as in ComfyUI."""
        return [
            ("GET", "/internal/folder_paths", self.folder_paths),
            ("GET", "/internal/logs", _constant("")),
            ("GET", "/internal/logs/raw", _constant({"entries": [], "size": {"cols": 80, "rows": 24}})),
            ("PATCH", "/internal/logs/subscribe", _constant(None)),
            ("GET", "/user.css", self.user.get_user_css),
            # ComfyUI's own templates (comfyui-workflow-templates) are not shipped: none to list.
            ("GET", "/templates/index.json", _constant([])),
            ("GET", "/templates/index_logo.json", _constant({})),
        ]

    # pages

    async def index(self, request):
        return web.FileResponse(os.path.join(self.static_dir, "index.html"),
                                headers={"Cache-Control": "no-cache"})

    # prompts

    async def get_prompt(self, request):
        return web.json_response({"exec_info": {"queue_remaining": self.queue.remaining()}})

    async def post_prompt(self, request):
        """Validate and queue ``{"prompt", "client_id"?, "extra_data"?, "prompt_id"?, "number"?,
        "front"?, "partial_execution_targets"?}``; 400 with ComfyUI's error body if it cannot run."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HTTPError(400, "The request body must be a JSON object", type="invalid_prompt")
        if "prompt" not in body:
            raise HTTPError(400, "No prompt provided", "No prompt provided", "no_prompt")
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not _is_canonical_uuid(prompt_id):
            raise HTTPError(400, "Invalid prompt_id", f"{prompt_id!r} is not a lowercase hyphenated UUID",
                            "invalid_prompt_id")
        if self.queue.knows(prompt_id):
            raise HTTPError(400, "Invalid prompt_id", f"prompt {prompt_id} was already queued", "invalid_prompt_id")
        extra_data = body.get("extra_data") or {}
        targets = body.get("partial_execution_targets")
        if not isinstance(extra_data, dict) or not isinstance(targets, (list, type(None))):
            raise HTTPError(400, "Bad extra_data or partial_execution_targets",
                            "extra_data must be an object and partial_execution_targets a list of node ids",
                            "invalid_prompt")
        try:
            validation = await asyncio.to_thread(self._validate, body["prompt"], targets)
        except PromptError as e:
            return web.json_response(e.to_dict(), status=400)
        extra_data = {k: v for k, v in extra_data.items() if k not in SENSITIVE_EXTRA_DATA}
        extra_data["create_time"] = int(time.time() * 1000)
        try:
            number = float(body["number"]) if "number" in body else self.queue.next_number(bool(body.get("front")))
        except (TypeError, ValueError) as e:
            raise HTTPError(400, "Bad number", str(e), "invalid_prompt") from e
        client_id = body.get("client_id") or None
        self.queue.put(Job(number, prompt_id, body["prompt"], extra_data, validation, client_id),
                       announce=self.clients.broadcast_status)
        return web.json_response({"prompt_id": prompt_id, "number": number,
                                  "node_errors": validation.node_errors})

    def _validate(self, prompt, targets: list | None) -> Validation:
        """The runner's validation; ``targets`` narrows the outputs to run (the frontend's
        "queue selected output nodes")."""
        try:
            validation = self.validator.validate(self.validator.prepare(prompt))
        except PromptError:
            raise
        except Exception as e:  # a prompt so malformed that validation itself tripped over it
            raise PromptError(error("invalid_prompt", "Invalid prompt", f"{type(e).__name__}: {e}")) from e
        if targets is not None:
            targets = {str(t) for t in targets}
            validation.outputs = [o for o in validation.outputs if o in targets]
            validation.node_errors = {node_id: entry for node_id, entry in validation.node_errors.items()
                                      if targets & set(entry["dependent_outputs"])}
            if not validation.outputs:
                raise PromptError(error("prompt_no_outputs", "Prompt has no outputs",
                                        "none of partial_execution_targets is a valid output node"),
                                  validation.node_errors)
        return validation

    async def get_queue(self, request):
        return web.json_response(self.queue.queue())

    async def post_queue(self, request):
        body = await _json_object(request)
        if body.get("clear"):
            self.queue.delete_pending()
        if "delete" in body:
            self.queue.delete_pending(set(body["delete"]))
        self.clients.broadcast_status()
        return web.Response()

    async def get_history(self, request):
        try:
            max_items = int(request.query["max_items"]) if "max_items" in request.query else None
            offset = int(request.query.get("offset", 0))
        except ValueError as e:
            raise HTTPError(400, "max_items and offset must be integers", str(e)) from e
        return web.json_response(self.queue.history(max_items, offset))

    async def get_history_entry(self, request):
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history_entry(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request):
        body = await _json_object(request)
        if body.get("clear"):
            self.queue.delete_history()
        if "delete" in body:
            self.queue.delete_history(list(body["delete"]))
        return web.Response()

    async def get_jobs(self, request):
        """``?status=pending,in_progress,...&limit=&offset=&sort_order=desc|asc``."""
        statuses = set(request.query.get("status", ",".join(JOB_STATUSES)).split(","))
        try:
            offset = max(int(request.query.get("offset", 0)), 0)
            limit = int(request.query["limit"]) if "limit" in request.query else None
        except ValueError as e:
            raise HTTPError(400, "limit and offset must be integers", str(e)) from e
        jobs = [job for job in self.queue.jobs() if job["status"] in statuses]
        if request.query.get("sort_order") == "asc":
            jobs.reverse()
        page = jobs[offset:offset + limit if limit is not None else None]
        return web.json_response({"jobs": page, "pagination": {
            "offset": offset, "limit": limit if limit is not None else len(jobs), "total": len(jobs),
            "has_more": offset + len(page) < len(jobs)}})

    async def get_job(self, request):
        job = self.queue.job(request.match_info["job_id"])
        if job is None:
            raise HTTPError(404, f"no job {request.match_info['job_id']!r}")
        return web.json_response(job)

    async def cancel_job(self, request):
        self._cancel([request.match_info["job_id"]])
        return web.Response()

    async def cancel_jobs(self, request):
        body = await _json_object(request)
        self._cancel([str(i) for i in body.get("job_ids", [])])
        return web.Response()

    def _cancel(self, prompt_ids: list[str]) -> None:
        """Pending ones leave the queue; the running one is interrupted; finished ones stay."""
        self.queue.delete_pending(set(prompt_ids))
        for prompt_id in prompt_ids:
            self.worker.interrupt(prompt_id)
        self.clients.broadcast_status()

    async def interrupt(self, request):
        """Optional body ``{"prompt_id"}``: interrupt only if that prompt is the running one."""
        body = await _json_object(request)
        self.worker.interrupt(body.get("prompt_id"))
        return web.Response()

    async def free(self, request):
        """``{"unload_models": true}`` / ``{"free_memory": true}``: drop the worker's cache."""
        body = await _json_object(request)
        if body.get("unload_models") or body.get("free_memory"):
            self.worker.free()
        return web.Response()

    # nodes and models

    async def get_object_info(self, request):
        return web.json_response(await asyncio.to_thread(self._object_info, self.node_classes))

    async def get_node_info(self, request):
        name = request.match_info["node_class"]
        known = {name: self.node_classes[name]} if name in self.node_classes else {}
        return web.json_response(await asyncio.to_thread(self._object_info, known))

    def _object_info(self, classes) -> dict:
        with hosts.activate(self.host):  # loaders list the files of their model folders
            return object_info.object_info(classes, self.display_names)

    def _model_folder(self, request) -> str:
        folder = request.match_info["folder"]
        if hosts.canonical_folder(folder) not in hosts.MODEL_FOLDERS:
            raise HTTPError(404, f"unknown model folder {folder!r}",
                            f"known: {', '.join(hosts.MODEL_FOLDERS)}")
        return folder

    async def model_types(self, request):
        return web.json_response(list(hosts.MODEL_FOLDERS))

    async def model_names(self, request):
        return web.json_response(self.host.model_files(self._model_folder(request)))

    async def model_folders(self, request):
        return web.json_response([{"name": folder, "folders": self.host.model_folders(folder)}
                                  for folder in hosts.MODEL_FOLDERS])

    async def model_files(self, request):
        folder = self._model_folder(request)
        roots = self.host.model_folders(folder)
        return web.json_response([
            {"name": name, "pathIndex": next(i for i, root in enumerate(roots)
                                             if os.path.isfile(os.path.join(root, name)))}
            for name in self.host.model_files(folder)])

    async def folder_paths(self, request):
        return web.json_response({folder: self.host.model_folders(folder) for folder in hosts.MODEL_FOLDERS})

    # files

    async def view(self, request):
        """``?filename=&subfolder=&type=output|input|temp``: a file from those folders only."""
        if not request.query.get("filename"):
            raise HTTPError(400, "the 'filename' query parameter is required")
        filename, type_ = files.split_annotation(request.query["filename"], request.query.get("type", "output"))
        try:
            root = files.folder(self.host, type_)
            path = files.inside(root, request.query.get("subfolder", ""), filename)
        except files.UnsafePath as e:
            raise HTTPError(403, "The file is outside the output, input and temp folders", str(e)) from e
        except files.BadName as e:
            raise HTTPError(400, "Bad file name", str(e)) from e
        except ValueError as e:
            raise HTTPError(400, "Bad file type", str(e)) from e
        if not os.path.isfile(path):
            raise HTTPError(404, f"no {type_} file {request.query['filename']!r}")
        return files.file_response(path, files.MEDIA_TYPES)

    async def upload_image(self, request):
        """Multipart ``image`` (a file), ``type`` (input by default), ``subfolder``, ``overwrite``.
        An existing file of another content is kept: the upload gets ``name (1).ext``. An existing
        output is never overwritten (409) unless the setting ALLOW_OUTPUT_OVERWRITE is true."""
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError) as e:  # e.g. a NUL in a part's header
            raise HTTPError(400, "Malformed multipart body", str(e)) from e
        upload = form.get("image")
        if not isinstance(upload, web.FileField):
            raise HTTPError(400, "the multipart field 'image' must be a file")
        type_ = form.get("type") or "input"
        overwrite = form.get("overwrite") in ("true", "1")
        subfolder = form.get("subfolder") or ""
        try:
            root = files.folder(self.host, type_)
            name = files.check_filename(upload.filename)
            directory = os.path.dirname(files.inside(root, subfolder, name))
        except (files.UnsafePath, files.BadName) as e:
            raise HTTPError(400, "Bad upload name or subfolder", str(e)) from e
        except ValueError as e:
            raise HTTPError(400, "Bad upload type", str(e)) from e
        data = upload.file.read()
        path = os.path.join(directory, name)
        if overwrite and type_ == "output" and os.path.exists(path) \
                and self.user.settings().get(ALLOW_OUTPUT_OVERWRITE) is not True:
            raise HTTPError(409, "An upload may not replace an output", f"{subfolder + '/' if subfolder else ''}"
                            f"{name} exists in the output folder; set {ALLOW_OUTPUT_OVERWRITE} to true to "
                            "allow uploads to replace outputs")
        if os.path.exists(path) and not overwrite and not _same_content(path, data):
            name = files.free_name(directory, name)
            path = os.path.join(directory, name)
        os.makedirs(directory, exist_ok=True)
        files.write_atomic(path, data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": type_})

    # the rest of what the frontend asks for

    async def system_stats(self, request):
        return web.json_response(await asyncio.to_thread(system.system_stats, self.host.device()))

    async def features(self, request):
        return web.json_response(self.feature_flags)


def serve(server: PromptServer, host: str = "127.0.0.1", port: int = 8188) -> None:
    """Serve until Ctrl-C."""
    web.run_app(server.make_app(), host=host, port=port,
                print=lambda _: print(f"WanRT: ComfyUI frontend at http://{host}:{port}/ (Ctrl-C stops)"))


@contextlib.contextmanager
def running(server: PromptServer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve on a background thread (``port=0``: a free port); yields the base URL and stops the
    server (and its worker) on exit."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.make_app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, host, port)
    loop.run_until_complete(site.start())
    bound_host, bound_port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="wanrt-server", daemon=True)
    thread.start()
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _constant(value):
    async def handler(request):
        return web.json_response(value) if value is not None else web.Response()
    return handler


async def _json_object(request) -> dict:
    """An optional JSON object body (empty = ``{}``)."""
    if not (await request.read()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HTTPError(400, "The request body must be a JSON object")
    return body


def _is_canonical_uuid(value) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _same_content(path: str, data: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read() == data
