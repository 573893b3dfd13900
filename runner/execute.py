"""The executor: runs the ancestors of a prompt's output nodes in dependency order, with a cache
of node outputs that lives across prompts (comfyui.md §3.2).

A node's cache key is its input signature: class, ``IS_CHANGED`` value, its constant inputs and
the keys of the nodes its links come from. A second prompt that differs only in a sampler's seed
therefore reruns only the sampler and what depends on it; the model loaders are reused. When a
prompt starts, the entries it cannot use are dropped (the cache holds one prompt's outputs).

Events go to ``on_event(event, data)`` with ComfyUI's WebSocket names and payloads:
``execution_start``, ``execution_cached``, ``executing``, ``progress``, ``executed``,
``execution_success``, ``execution_error``, ``execution_interrupted``, and a final ``executing``
with ``node: None``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
import traceback
import uuid
from collections.abc import Callable, Mapping

from .. import nodes
from ..nodes import host as hosts
from .convert import apply_overrides, to_api_prompt
from .errors import PromptError, error
from .graph import execution_order, is_link, links, node_sort_key
from .nodedefs import hidden_inputs, node_inputs, return_types
from .validate import Validation, validate_prompt

EventCallback = Callable[[str, dict], None]


@dataclasses.dataclass
class RunResult:
    """What one prompt produced. ``outputs`` and ``files`` include those of nodes that finished
    before a failure."""

    prompt_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict]  # node id -> the node's ui dict (as in ComfyUI's history)
    files: list[str]  # paths of the output / temp files named by the ui dicts
    timings: dict[str, float]  # node id -> seconds, for the nodes that ran
    cached: list[str]  # node ids whose outputs came from the cache
    error: dict | None = None  # the execution_error / execution_interrupted event data

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Executor:
    """Converts, validates and executes prompts; keep one per process to reuse loaded models.

    ``host``: where nodes find models and write files (default: ``host.current()``).
    ``node_classes``: class_type -> node class (default: ``nodes.runner_node_classes()``, read
    at each call so nodes registered later are seen). ``cache=False`` runs every node every time.
    """

    def __init__(self, host: hosts.Host | None = None, node_classes: Mapping[str, type] | None = None,
                 on_event: EventCallback | None = None, cache: bool = True):
        self.host = host if host is not None else hosts.current()
        self._node_classes = node_classes
        self.on_event = on_event
        self.cache_enabled = cache
        self._cache: dict[object, tuple[tuple, dict | None]] = {}  # key -> (outputs, ui)
        self._instances: dict[tuple[str, str], object] = {}
        self._running: str | None = None  # the node being keyed or executed

    @property
    def node_classes(self) -> Mapping[str, type]:
        return self._node_classes if self._node_classes is not None else nodes.runner_node_classes()

    def prepare(self, workflow: Mapping, overrides: Mapping[str, object] | None = None) -> dict:
        """The API prompt of a UI or API workflow, with ``{"NODE_ID.input": value}`` overrides."""
        with hosts.activate(self.host):  # INPUT_TYPES may list model files
            prompt = to_api_prompt(workflow, self.node_classes)
            apply_overrides(prompt, overrides or {}, self.node_classes)
        return prompt

    def validate(self, prompt: Mapping) -> Validation:
        """ComfyUI's validation: raises PromptError if no output can run; outputs that cannot run
        are listed in ``node_errors`` (ComfyUI would run the others)."""
        with hosts.activate(self.host):
            return validate_prompt(prompt, self.node_classes)

    def run(self, workflow: Mapping, overrides: Mapping[str, object] | None = None, *,
            prompt_id: str | None = None, extra_data: dict | None = None) -> RunResult:
        """Prepare, validate (any error rejects the whole prompt before work starts) and execute."""
        validation = self.validate(self.prepare(workflow, overrides))
        if validation.node_errors:
            messages = [f"{e['message']}: {e['details']}" for entry in validation.node_errors.values()
                        for e in entry["errors"]]
            raise PromptError(error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                    "\n".join(messages)), validation.node_errors)
        return self.execute(validation, prompt_id=prompt_id, extra_data=extra_data)

    def interrupt(self) -> None:
        """Stop the running prompt at its next progress update or before its next node."""
        self.host.interrupt()

    def execute(self, validation: Validation, *, prompt_id: str | None = None,
                extra_data: dict | None = None) -> RunResult:
        """Run the valid outputs of ``validation`` and their ancestors."""
        result = RunResult(prompt_id or str(uuid.uuid4()), "success", {}, [], {}, [])
        prompt = validation.prompt
        order = execution_order(prompt, validation.outputs)
        values: dict[str, tuple] = {}
        self._running = None
        self.host.clear_interrupt()
        self.host.on_progress = lambda value, total, preview: self._emit(
            "progress", {"value": value, "max": total, "prompt_id": result.prompt_id, "node": self._running})
        self._emit("execution_start", {"prompt_id": result.prompt_id, "timestamp": _now_ms()})
        try:
            self._run_nodes(prompt, order, validation.outputs, values, result, extra_data or {})
            self._emit("execution_success", {"prompt_id": result.prompt_id, "timestamp": _now_ms()})
        except BaseException as e:
            if not isinstance(e, Exception) and not self.host.is_interrupt(e):
                raise  # SystemExit and the like
            self._record_failure(e, prompt, [n for n in order if n in values], result)
        finally:
            self.host.on_progress = None
        self._emit("executing", {"node": None, "prompt_id": result.prompt_id})
        return result

    def _run_nodes(self, prompt: dict, order: list[str], outputs: list[str], values: dict[str, tuple],
                   result: RunResult, extra_data: dict) -> None:
        import torch

        with hosts.activate(self.host), torch.inference_mode():
            keys = {}
            for node_id in order:
                self._running = node_id
                keys[node_id] = self._cache_key(prompt, node_id, keys)
            self._running = None
            # Keep only what this prompt can reuse, before anything new is loaded.
            live = set(keys.values())
            self._cache = {k: v for k, v in self._cache.items() if k in live}
            result.cached = [n for n in order if keys[n] in self._cache]
            self._emit("execution_cached", {"nodes": result.cached, "prompt_id": result.prompt_id,
                                            "timestamp": _now_ms()})
            for output in sorted(outputs, key=node_sort_key):
                self._evaluate(prompt, output, keys, values, result, extra_data)

    def _evaluate(self, prompt: dict, node_id: str, keys: dict, values: dict[str, tuple],
                  result: RunResult, extra_data: dict) -> None:
        """Run ``node_id`` after what it needs, depth-first in node-id order (the order of
        ``execution_order``). A lazy input (``{"lazy": True}``) is evaluated only when the node's
        ``check_lazy_status`` asks for it, as ComfyUI does (e.g. the If/Else switch's unused branch
        never runs); unevaluated lazy inputs reach the node as None."""
        if node_id in values:
            return
        node = prompt[node_id]
        cls = self.node_classes[node["class_type"]]
        lazy = {name for name, spec in node_inputs(cls).items() if spec.options.get("lazy")}
        for name, source, _ in sorted(links(node), key=lambda link: node_sort_key(link[1])):
            if name not in lazy:
                self._evaluate(prompt, source, keys, values, result, extra_data)
        while lazy and hasattr(cls, "check_lazy_status"):
            kwargs = self._inputs(prompt, node_id, values)
            asked = getattr(self._instance(node_id, node["class_type"]), "check_lazy_status")(**kwargs)
            todo = [str(node["inputs"][name][0]) for name in asked or ()
                    if name in lazy and is_link(node["inputs"].get(name))
                    and str(node["inputs"][name][0]) not in values]
            if not todo:
                break
            for source in todo:
                self._evaluate(prompt, source, keys, values, result, extra_data)
        if node_id in result.cached:
            values[node_id], ui = self._cache[keys[node_id]]
        else:
            self._running = node_id
            self.host.throw_if_interrupted()
            self._emit("executing", {"node": node_id, "display_node": node_id,
                                     "prompt_id": result.prompt_id})
            start = time.perf_counter()
            values[node_id], ui = self._call(prompt, node_id, values, extra_data)
            result.timings[node_id] = time.perf_counter() - start
            if self.cache_enabled:
                self._cache[keys[node_id]] = (values[node_id], ui)
        if ui is not None:
            result.outputs[node_id] = ui
            result.files += self._files(ui)
            self._emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                    "prompt_id": result.prompt_id})

    def _record_failure(self, exc: BaseException, prompt: dict, executed: list[str], result: RunResult) -> None:
        node_id = self._running
        data = {"prompt_id": result.prompt_id, "node_id": node_id,
                "node_type": prompt[node_id]["class_type"] if node_id else None, "executed": executed}
        if self.host.is_interrupt(exc):
            result.status, result.error = "interrupted", data
            self._emit("execution_interrupted", data)
            return
        inputs = prompt[node_id]["inputs"] if node_id else {}
        data.update(exception_message=str(exc), exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                    traceback=traceback.format_tb(exc.__traceback__),
                    current_inputs={k: _short(v) for k, v in inputs.items() if not is_link(v)},
                    current_outputs=executed)
        result.status, result.error = "error", data
        self._emit("execution_error", data)

    def _cache_key(self, prompt: dict, node_id: str, keys: dict[str, object]) -> object:
        """Class, IS_CHANGED value, constants and upstream keys; the node id too where the node
        asks for it (NOT_IDEMPOTENT, or a UNIQUE_ID hidden input)."""
        node = prompt[node_id]
        cls = self.node_classes[node["class_type"]]
        signature = tuple(sorted(
            (name, ("link", keys[str(value[0])], value[1]) if is_link(value) else _freeze(value))
            for name, value in node["inputs"].items()))
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            params = inspect.signature(cls.IS_CHANGED).parameters
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
            changed = cls.IS_CHANGED(**{name: None if is_link(value) else value
                                        for name, value in node["inputs"].items() if takes_all or name in params})
            if isinstance(changed, float) and math.isnan(changed):
                changed = object()  # "always changed": equal to nothing
            else:
                changed = _freeze(changed)
        unique = getattr(cls, "NOT_IDEMPOTENT", False) or "UNIQUE_ID" in hidden_inputs(cls).values()
        return (node["class_type"], changed, node_id if unique else None, signature)

    def _inputs(self, prompt: dict, node_id: str, values: dict[str, tuple]) -> dict:
        """The node's inputs by name: constants, and linked values (None where not evaluated)."""
        return {name: (values[str(value[0])][value[1]] if str(value[0]) in values else None)
                if is_link(value) else value for name, value in prompt[node_id]["inputs"].items()}

    def _instance(self, node_id: str, class_type: str):
        instance = self._instances.get((node_id, class_type))
        if instance is None:
            instance = self._instances[(node_id, class_type)] = self.node_classes[class_type]()
        return instance

    def _call(self, prompt: dict, node_id: str, values: dict[str, tuple], extra_data: dict):
        node = prompt[node_id]
        cls = self.node_classes[node["class_type"]]
        kwargs = self._inputs(prompt, node_id, values)
        hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"), "UNIQUE_ID": node_id}
        kwargs.update({name: hidden.get(kind) for name, kind in hidden_inputs(cls).items()})
        returned = getattr(self._instance(node_id, node["class_type"]), cls.FUNCTION)(**kwargs)
        return _split_return(returned, cls, node_id)

    def _files(self, ui: dict) -> list[str]:
        roots = {"output": self.host.output_dir(), "temp": self.host.temp_dir()}
        return [_join(roots[item["type"]], item.get("subfolder", ""), item["filename"])
                for items in ui.values() if isinstance(items, (list, tuple))
                for item in items if isinstance(item, dict) and item.get("type") in roots and "filename" in item]

    def _emit(self, event: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(event, data)


def _split_return(returned, cls, node_id: str) -> tuple[tuple, dict | None]:
    """A node returns a tuple, or ``{"ui": {...}, "result": (...)}``; node expansion is not supported."""
    ui = None
    if isinstance(returned, dict):
        if "expand" in returned:
            raise NotImplementedError(f"node {node_id} ({cls.__name__}) expands into a graph; "
                                      "the WanRT runner does not support node expansion")
        ui, returned = returned.get("ui"), returned.get("result", ())
    outputs = tuple(returned) if returned is not None else ()
    if len(outputs) != len(return_types(cls)):
        raise TypeError(f"node {node_id} ({cls.__name__}.{cls.FUNCTION}) returned {len(outputs)} values; "
                        f"its RETURN_TYPES declare {len(return_types(cls))}")
    return outputs, ui


def _freeze(value):
    """A hashable stand-in for a constant input (lists and dicts become tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _join(root: str, subfolder: str, filename: str) -> str:
    return os.path.join(root, *[p for p in subfolder.split("/") if p], filename)


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _now_ms() -> int:
    return int(time.time() * 1000)
