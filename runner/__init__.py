"""Headless runner for ComfyUI workflows of WanRT nodes: UI→API conversion, ComfyUI-style
validation, and a caching executor that a server can reuse across prompts.

    from wanrt.runner import run_workflow
    result = run_workflow("workflows/t2v.json", models_dir="tiny-models")
    print(result.status, result.files)

Long-lived use (one Executor keeps loaded models between prompts)::

    executor = Executor(HeadlessHost.from_paths("models"), on_event=print)
    validation = executor.validate(executor.prepare(workflow))   # PromptError if nothing can run
    result = executor.execute(validation)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ..nodes.host import HeadlessHost
from .convert import apply_overrides, to_api_prompt
from .errors import PromptError, format_prompt_error
from .execute import EventCallback, Executor, RunResult
from .validate import Validation, validate_prompt

__all__ = ["Executor", "RunResult", "Validation", "PromptError", "EventCallback", "run_workflow",
           "load_workflow", "to_api_prompt", "apply_overrides", "validate_prompt", "format_prompt_error"]


def load_workflow(path) -> dict:
    """Read a workflow JSON file (UI or API format); a ValueError or OSError names the file."""
    with open(path, encoding="utf-8") as f:
        try:
            workflow = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from e
    if not isinstance(workflow, dict):
        raise ValueError(f"{path}: expected a JSON object (a ComfyUI workflow), got {type(workflow).__name__}")
    return workflow


def run_workflow(workflow: Mapping | str | os.PathLike, *, models_dir=None, output_dir=None,
                 extra_model_paths=None, overrides: Mapping[str, object] | None = None,
                 on_event: EventCallback | None = None, node_classes: Mapping[str, type] | None = None,
                 show_progress: bool = True) -> RunResult:
    """Run a workflow (dict or JSON file) once, headless. Raises PromptError if it is rejected
    before any work; execution failures come back as ``result.status == "error"``."""
    if not isinstance(workflow, Mapping):
        workflow = load_workflow(workflow)
    host = HeadlessHost.from_paths(models_dir, extra_model_paths, output_dir=output_dir or "output",
                                   show_progress=show_progress)
    return Executor(host, node_classes, on_event).run(workflow, overrides)
