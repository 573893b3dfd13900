"""The prompt queue and the history, shaped as ComfyUI's ``/queue``, ``/history`` and ``/jobs`` show
them (comfyui.md §3.2–3.3). Thread-safe: the HTTP handlers add and remove, the worker takes.

A queue item is ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``; a smaller
``number`` runs first (``front: true`` queues with a negative one). A history entry is
``{"prompt": item, "outputs": {node_id: ui}, "status": {...}, "meta": {...}}``.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import threading

from ..runner import Validation

# Events a history entry keeps in status.messages (ComfyUI keeps these, not per-node ones).
HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


@dataclasses.dataclass
class Job:
    """One queued prompt. ``extra_data`` holds no credentials (the frontend sends its comfy.org
    tokens there; they are dropped on arrival)."""

    number: float
    prompt_id: str
    prompt: dict  # the API prompt as submitted
    extra_data: dict
    validation: Validation
    client_id: str | None

    @property
    def item(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.validation.outputs]


def history_entry(job: Job, status: str, outputs: dict, messages: list) -> dict:
    """``status``: the runner's "success" | "error" | "interrupted" (ComfyUI reports the last two
    as ``status_str: "error"``; the messages tell them apart)."""
    return {
        "prompt": job.item,
        "outputs": outputs,
        "status": {"status_str": "success" if status == "success" else "error",
                   "completed": status == "success", "messages": messages},
        "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                           "real_node_id": node_id} for node_id in outputs},
    }


class PromptQueue:
    def __init__(self, history_size: int = 1000):
        self._changed = threading.Condition()
        self._pending: list[tuple[float, int, Job]] = []  # a heap on (number, arrival)
        self._arrivals = itertools.count()
        self._numbers = itertools.count()
        self.running: Job | None = None
        self._history: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._history_size = history_size
        self._closed = False

    def next_number(self, front: bool = False) -> float:
        number = next(self._numbers)
        return -number if front else number

    def knows(self, prompt_id: str) -> bool:
        with self._changed:
            return (prompt_id in self._history or (self.running and self.running.prompt_id == prompt_id)
                    or any(job.prompt_id == prompt_id for _, _, job in self._pending))

    def put(self, job: Job, announce=lambda: None) -> None:
        """Queue ``job``; ``announce()`` runs before the worker can take it (so a "status" it
        posts reaches clients before the job's first event)."""
        with self._changed:
            heapq.heappush(self._pending, (job.number, next(self._arrivals), job))
            announce()
            self._changed.notify_all()

    def take(self, wake=lambda: False) -> Job | None:
        """Block until a job is pending (it becomes ``running``), the queue closes or ``wake()``
        is true after a :meth:`nudge` (then None)."""
        with self._changed:
            while not self._pending and not self._closed and not wake():
                self._changed.wait()
            if self._closed or not self._pending:
                return None
            self.running = heapq.heappop(self._pending)[2]
            return self.running

    def nudge(self) -> None:
        with self._changed:
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def finish(self, job: Job, entry: dict) -> None:
        with self._changed:
            self._history[job.prompt_id] = entry
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)
            self.running = None

    def remaining(self) -> int:
        with self._changed:
            return len(self._pending) + (self.running is not None)

    def queue(self) -> dict:
        with self._changed:
            return {"queue_running": [self.running.item] if self.running else [],
                    "queue_pending": [job.item for _, _, job in sorted(self._pending)]}

    def delete_pending(self, prompt_ids=None) -> list[Job]:
        """Remove the pending jobs with these ids (all of them for None); returns them."""
        with self._changed:
            removed = [job for _, _, job in self._pending if prompt_ids is None or job.prompt_id in prompt_ids]
            self._pending = [entry for entry in self._pending if entry[2] not in removed]
            heapq.heapify(self._pending)
            return removed

    def history(self, max_items: int | None = None, offset: int = 0) -> dict:
        """The newest ``max_items`` entries after skipping ``offset`` newest ones, oldest first."""
        with self._changed:
            items = list(self._history.items())
        end = len(items) - offset
        start = 0 if max_items is None else max(0, end - max_items)
        return dict(items[start:max(end, 0)])

    def history_entry(self, prompt_id: str) -> dict | None:
        with self._changed:
            return self._history.get(prompt_id)

    def delete_history(self, prompt_ids=None) -> None:
        with self._changed:
            for prompt_id in list(self._history) if prompt_ids is None else prompt_ids:
                self._history.pop(prompt_id, None)

    def jobs(self) -> list[dict]:
        """Every job, as ``/jobs`` lists them (newest first)."""
        with self._changed:
            live = [(self.running, "in_progress")] if self.running else []
            live += [(job, "pending") for _, _, job in sorted(self._pending)]
            history = list(self._history.items())
        jobs = [_live_job(job, status) for job, status in live]
        jobs += [_finished_job(prompt_id, entry) for prompt_id, entry in reversed(history)]
        return sorted(jobs, key=lambda job: job["create_time"], reverse=True)

    def job(self, prompt_id: str) -> dict | None:
        """One job with its outputs and the prompt that made it (``/jobs/{id}``)."""
        entry = self.history_entry(prompt_id)
        if entry is not None:
            _, _, prompt, extra_data, _ = entry["prompt"]
            return {**_finished_job(prompt_id, entry), "outputs": entry["outputs"],
                    "execution_status": entry["status"],
                    "workflow": {"prompt": prompt, "extra_data": extra_data}}
        with self._changed:
            live = [(self.running, "in_progress")] if self.running else []
            live += [(job, "pending") for _, _, job in self._pending]
        for job, status in live:
            if job.prompt_id == prompt_id:
                return {**_live_job(job, status), "workflow": {"prompt": job.prompt, "extra_data": job.extra_data}}
        return None


def _live_job(job: Job, status: str) -> dict:
    return {"id": job.prompt_id, "status": status, "priority": job.number,
            "create_time": job.extra_data.get("create_time", 0), "outputs_count": 0,
            "previewable_outputs_count": 0, "workflow_id": _workflow_id(job.extra_data)}


def _finished_job(prompt_id: str, entry: dict) -> dict:
    number, _, _, extra_data, _ = entry["prompt"]
    times = {event: data.get("timestamp") for event, data in entry["status"]["messages"]}
    error = next((data for event, data in entry["status"]["messages"] if event == "execution_error"), None)
    if error is not None:  # the frontend's schema wants strings where a failure outside any node has None
        error = {**error, "node_id": error.get("node_id") or "", "node_type": error.get("node_type") or ""}
    status = ("completed" if entry["status"]["status_str"] == "success" else
              "cancelled" if "execution_interrupted" in times else "failed")
    files = [dict(item, nodeId=node_id, mediaType=kind) for node_id, ui in entry["outputs"].items()
             for kind, items in ui.items() if kind != "animated" and isinstance(items, list)
             for item in items if isinstance(item, dict) and "filename" in item]
    return {"id": prompt_id, "status": status, "priority": number,
            "create_time": extra_data.get("create_time", 0),
            "execution_start_time": times.get("execution_start"),
            "execution_end_time": next((times[e] for e in ("execution_success", "execution_error",
                                                           "execution_interrupted") if e in times), None),
            "execution_error": error, "outputs_count": len(files), "previewable_outputs_count": len(files),
            "preview_output": next((f for f in files if f.get("type") == "output"), files[0] if files else None),
            "workflow_id": _workflow_id(extra_data)}


def _workflow_id(extra_data: dict) -> str | None:
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow")
    return workflow.get("id") if isinstance(workflow, dict) else None
