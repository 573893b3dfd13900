"""The worker: one thread that runs queued prompts in order with one runner Executor, whose cache
of node outputs (loaded models, encoded prompts) lives across prompts, as in ComfyUI."""

from __future__ import annotations

import gc
import logging
import threading
import traceback

from ..runner import Executor
from ..wan_core import parallel
from .queue import HISTORY_EVENTS, Job, PromptQueue, history_entry

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, host, node_classes, queue: PromptQueue, clients):
        self.host, self.node_classes = host, node_classes
        self.executor = Executor(host, node_classes)
        self.queue, self.clients = queue, clients
        self._free_requested = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wanrt-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the running prompt, which is asked to stop at its next step."""
        self.queue.close()
        self.interrupt()
        self._thread.join(timeout)
        _announce(None)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given)."""
        running = self.queue.running
        if running is None or prompt_id not in (None, running.prompt_id):
            return False
        self.executor.interrupt()
        return True

    def free(self) -> None:
        """Drop the cached node outputs (models included) once the running prompt is done."""
        self._free_requested.set()
        self.queue.nudge()

    def _loop(self) -> None:
        while not self.queue.closed:
            job = self.queue.take(wake=self._free_requested.is_set)
            if self._free_requested.is_set():
                self._free()
            if job is not None:
                self._run(job)

    def _run(self, job: Job) -> None:
        events = PromptEvents(job, self.clients)
        self.executor.on_event = events
        try:
            _announce(("run", job.validation, job.prompt_id, job.extra_data))
            result = self.executor.execute(job.validation, prompt_id=job.prompt_id, extra_data=job.extra_data)
            status, outputs = result.status, result.outputs
        except Exception as e:  # the runner itself failed: report it as ComfyUI reports a node failure
            log.exception("prompt %s failed outside its nodes", job.prompt_id)
            events("execution_error", {"prompt_id": job.prompt_id, "node_id": None, "node_type": None,
                                       "executed": [], "exception_message": str(e),
                                       "exception_type": f"{type(e).__module__}.{type(e).__qualname__}",
                                       "traceback": traceback.format_tb(e.__traceback__),
                                       "current_inputs": {}, "current_outputs": []})
            events("executing", {"node": None, "prompt_id": job.prompt_id})
            status, outputs = "error", {}
        finally:
            self.executor.on_event = None
        self.queue.finish(job, history_entry(job, status, outputs, events.messages))
        self.clients.broadcast_status()
        events.close()

    def _free(self) -> None:
        self._free_requested.clear()
        _announce(("free",))
        self.executor = Executor(self.host, self.node_classes)
        _release_memory(self.host)


def _announce(message) -> None:
    """In ``serve --parallel``: hand rank 0's next step to the other ranks (see :func:`follow`)."""
    mesh = parallel.current()
    if mesh is not None:
        parallel.broadcast_from_writer(message, group=mesh.announce_group)


def follow(host, node_classes) -> None:
    """The ranks other than 0 of ``wanrt serve --parallel``: run each prompt rank 0's worker
    runs, in step with it, until it stops."""
    executor = Executor(host, node_classes)
    group = parallel.current().announce_group
    while (message := parallel.broadcast_from_writer(group=group)) is not None:
        if message[0] == "free":
            executor = Executor(host, node_classes)
            _release_memory(host)
            continue
        _, validation, prompt_id, extra_data = message
        result = executor.execute(validation, prompt_id=prompt_id, extra_data=extra_data)
        if result.status == "error":
            log.error("prompt %s failed on this rank: %s", prompt_id, result.error)


def _release_memory(host) -> None:
    import torch

    gc.collect()
    backend = getattr(torch, host.device().type, None)
    if hasattr(backend, "empty_cache"):
        backend.empty_cache()


class PromptEvents:
    """One prompt's executor events, sent to the client that queued it, plus ComfyUI's
    ``progress_state`` (per-node state; the frontend highlights the running node from it). Keeps
    the messages of the history entry. The closing ``executing {node: None}`` is held back until
    :meth:`close`, after the history entry exists: clients read ``/history`` when they see it."""

    def __init__(self, job: Job, clients):
        self.job, self.clients = job, clients
        self.messages: list[list] = []
        self.nodes: dict[str, dict] = {}
        self._closing: dict | None = None

    def __call__(self, event: str, data: dict) -> None:
        if event in HISTORY_EVENTS:
            self.messages.append([event, data])
        if event == "executing" and data["node"] is None:
            self._closing = data
            return
        self._send(event, data)
        if event == "executing":
            self._set_state("finished", data["node"], "running", 0, 1)
        elif event == "progress" and data.get("node") is not None:
            self._set_state(None, data["node"], "running", data["value"], data["max"])
        elif event in ("execution_success", "execution_interrupted"):
            self._set_state("finished")
        elif event == "execution_error":
            self._set_state("error")

    def close(self) -> None:
        if self._closing is not None:
            self._send("executing", self._closing)

    def _set_state(self, others: str | None, node: str | None = None, state: str = "", value=0, max_=1) -> None:
        """Set ``node``'s state, and turn the other running nodes to ``others``."""
        if others:
            for entry in self.nodes.values():
                if entry["state"] == "running":
                    entry["state"] = others
        if node is not None:
            self.nodes[node] = {"value": value, "max": max_, "state": state, "node_id": node,
                                "prompt_id": self.job.prompt_id, "display_node_id": node,
                                "parent_node_id": None, "real_node_id": node}
        self._send("progress_state", {"prompt_id": self.job.prompt_id,
                                      "nodes": {k: dict(v) for k, v in self.nodes.items()}})

    def _send(self, event: str, data: dict) -> None:
        self.clients.post(event, data, self.job.client_id)
