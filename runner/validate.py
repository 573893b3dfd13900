"""Validation of an API prompt before any work, with ComfyUI's error shapes (comfyui.md §3.1)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import traceback
from collections.abc import Mapping

from .errors import PromptError, error
from .graph import is_link, links, node_sort_key
from .nodedefs import InputSpec, is_output_node, node_inputs, return_types, types_match

_COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}  # ComfyUI's conversions
_COMBO_LIST_LIMIT = 20  # longer option lists are abbreviated in errors, as ComfyUI does


@dataclasses.dataclass
class Validation:
    """The outcome of a validation that found at least one runnable output."""

    prompt: dict  # a copy with widget values unwrapped and converted (INT, FLOAT, STRING, BOOLEAN)
    outputs: list[str]  # output nodes whose inputs and ancestors are all valid
    node_errors: dict  # ComfyUI's node_errors for the rest (empty when everything is valid)


def validate_prompt(prompt: Mapping, node_classes: Mapping[str, type]) -> Validation:
    """Check every output node and its ancestors. Raises PromptError when the prompt has a node
    without class or of an unknown class, no output node, or no output that passes."""
    prompt = copy.deepcopy(dict(prompt))
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise PromptError(error("invalid_prompt",
                                    "Cannot execute because a node is missing the class_type property.",
                                    f"Node ID '#{node_id}'"))
        if node["class_type"] not in node_classes:
            meta = node.get("_meta")
            title = str(meta.get("title") or node["class_type"]) if isinstance(meta, dict) else node["class_type"]
            raise PromptError(error("missing_node_type",
                                    f"Node '{title}' not found. The custom node may not be installed.",
                                    f"Node ID '#{node_id}'",
                                    node_id=node_id, class_type=node["class_type"], node_title=title))
    outputs = sorted((n for n, node in prompt.items() if is_output_node(node_classes[node["class_type"]])),
                     key=node_sort_key)
    if not outputs:
        raise PromptError(error("prompt_no_outputs", "Prompt has no outputs"))

    checker = _Checker(prompt, node_classes)
    good, node_errors, messages = [], {}, []
    for output in outputs:
        if checker.check(output):
            good.append(output)
            continue
        for node_id in checker.failed_ancestors(output):
            errors = checker.errors[node_id]
            entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": prompt[node_id]["class_type"]})
            entry["dependent_outputs"].append(output)
            messages += [f"{e['message']}: {e['details']}" for e in errors]
    if not good:
        raise PromptError(error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                "\n".join(dict.fromkeys(messages))), node_errors)
    return Validation(prompt, good, node_errors)


class _Checker:
    """Validates nodes depth-first from the outputs; each node once."""

    def __init__(self, prompt: dict, node_classes: Mapping[str, type]):
        self.prompt, self.classes = prompt, node_classes
        self.valid: dict[str, bool] = {}
        self.errors: dict[str, list[dict]] = {}
        self._visiting: set[str] = set()

    def check(self, node_id: str) -> bool:
        if node_id not in self.valid:
            self._visiting.add(node_id)
            try:
                errors, upstream_valid = self._check_node(node_id)
            except Exception as e:  # a node's INPUT_TYPES / VALIDATE_INPUTS raised
                errors, upstream_valid = [error(
                    "exception_during_validation", "Exception when validating node", str(e),
                    exception_type=f"{type(e).__module__}.{type(e).__qualname__}",
                    traceback=traceback.format_tb(e.__traceback__))], True
            self._visiting.discard(node_id)
            self.errors[node_id] = errors
            self.valid[node_id] = not errors and upstream_valid
        return self.valid[node_id]

    def failed_ancestors(self, output: str) -> list[str]:
        """The nodes with errors of their own among ``output`` and its ancestors."""
        seen, todo = set(), [output]
        while todo:
            node_id = todo.pop()
            if node_id not in seen and node_id in self.prompt:
                seen.add(node_id)
                todo += [source for _, source, _ in links(self.prompt[node_id])]
        return sorted((n for n in seen if self.errors.get(n)), key=node_sort_key)

    def _check_node(self, node_id: str) -> tuple[list[dict], bool]:
        node = self.prompt[node_id]
        cls = self.classes[node["class_type"]]
        inputs = node["inputs"]
        custom = _custom_validation(cls)
        errors, upstream_valid, received_types = [], True, {}
        for name, spec in node_inputs(cls).items():
            if name not in inputs:
                if spec.required:
                    errors.append(error("required_input_missing", "Required input is missing", name,
                                        input_name=name))
                continue
            if is_link(inputs[name]):
                problem, received = self._check_link(node_id, name, spec, custom)
                if problem:
                    errors.append(problem)
                else:
                    received_types[name] = received
                    upstream_valid &= self.check(inputs[name][0])
            else:
                problem = _check_value(inputs, name, spec, skip_builtin_checks=name in custom.names)
                if problem:
                    errors.append(problem)
        if custom.defined and not errors:
            errors += _run_custom_validation(cls, inputs, custom, received_types, self._upstream(inputs))
        return errors, upstream_valid

    def _upstream(self, inputs: dict) -> dict[str, dict]:
        """For each linked input: its source node's class and widget values (links left out)."""
        return {name: {"class_type": source["class_type"],
                       "inputs": {k: v for k, v in source["inputs"].items() if not is_link(v)}}
                for name, value in inputs.items() if is_link(value)
                for source in [self.prompt.get(str(value[0]))] if source is not None}

    def _check_link(self, node_id: str, name: str, spec: InputSpec,
                    custom: _CustomValidation) -> tuple[dict | None, object]:
        value = self.prompt[node_id]["inputs"][name]
        config = [spec.type, spec.options]
        source = self.prompt.get(str(value[0])) if len(value) == 2 else None
        slots = return_types(self.classes[source["class_type"]]) if source else ()
        if source is None or not isinstance(value[1], int) or not 0 <= value[1] < len(slots):
            why = ("must be a length-2 list of [node_id, slot_index]" if len(value) != 2 else
                   f"node {value[0]} does not exist" if source is None else
                   f"node {value[0]} ({source['class_type']}) has no output {value[1]}")
            return error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                         f"{name}: {why}", input_name=name, input_config=config, received_value=value), None
        value[0] = str(value[0])
        received = slots[value[1]]
        if not types_match(received, spec.type) and not custom.input_types:
            return error("return_type_mismatch", "Return type mismatch between linked nodes",
                         f"{name}, {received} != {spec.socket_type}", input_name=name, input_config=config,
                         received_type=received, linked_node=value), None
        if value[0] in self._visiting:
            return error("dependency_cycle", "Dependency cycle detected",
                         f"{name}: node {value[0]} depends on node {node_id}, which depends on it",
                         input_name=name, linked_node=value), None
        return None, received



def _check_value(inputs: dict, name: str, spec: InputSpec, *, skip_builtin_checks: bool) -> dict | None:
    """Unwrap ``{"__value__": ...}``, convert like ComfyUI, then check min / max / combo options."""
    value = inputs[name]
    config = [spec.type, spec.options]
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    if isinstance(spec.type, str) and spec.type in _COERCE:
        try:
            value = _COERCE[spec.type](value)
        except (TypeError, ValueError, OverflowError) as e:
            return error("invalid_input_type", f"Failed to convert an input value to a {spec.type} value",
                         f"{name}, {value}, {e}", input_name=name, input_config=config, received_value=value,
                         exception_message=str(e))
    inputs[name] = value
    if spec.type == "FLOAT" and not math.isfinite(value):
        return error("invalid_input_type", "A FLOAT input must be a finite number", f"{name}, {value}",
                     input_name=name, input_config=config, received_value=str(value))
    if skip_builtin_checks:
        return None
    if "min" in spec.options and value < spec.options["min"]:
        return error("value_smaller_than_min", f"Value {value} smaller than min of {spec.options['min']}", name,
                     input_name=name, input_config=config, received_value=value)
    if "max" in spec.options and value > spec.options["max"]:
        return error("value_bigger_than_max", f"Value {value} bigger than max of {spec.options['max']}", name,
                     input_name=name, input_config=config, received_value=value)
    if spec.is_combo and value not in spec.choices:
        long = len(spec.choices) > _COMBO_LIST_LIMIT
        listed = f"(list of length {len(spec.choices)})" if long else str(spec.choices)
        return error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                     input_name=name, input_config=None if long else config, received_value=value)
    return None


@dataclasses.dataclass(frozen=True)
class _CustomValidation:
    """What a node's ``VALIDATE_INPUTS`` classmethod takes."""

    defined: bool
    names: frozenset = frozenset()  # inputs it names (they skip the built-in min/max/combo checks)
    all_inputs: bool = False  # it takes **kwargs: every input is passed
    input_types: bool = False  # it takes ``input_types`` (and so replaces the link type check)
    upstream: bool = False  # it takes ``upstream``: WanRT's own extension, see below


def _custom_validation(cls) -> _CustomValidation:
    if not hasattr(cls, "VALIDATE_INPUTS"):
        return _CustomValidation(False)
    params = inspect.signature(cls.VALIDATE_INPUTS).parameters
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return _CustomValidation(True, frozenset(named - {"input_types", "upstream"}),
                             any(p.kind is p.VAR_KEYWORD for p in params.values()), "input_types" in named,
                             "upstream" in named)


def _run_custom_validation(cls, inputs: dict, custom: _CustomValidation, received_types: dict,
                           upstream: dict) -> list[dict]:
    """``VALIDATE_INPUTS(**inputs it takes)`` must return True, else one error per input passed.
    Linked inputs are passed as None (their values do not exist yet).

    WanRT's extensions, invisible to ComfyUI (which passes neither and reads the result as text):
    an ``upstream`` parameter receives, per linked input, the source node's class and widget
    values (so a size check can read the linked VAE file); a result with ``by_input`` (see
    ``nodes.base.InvalidInputs``) reports each of those inputs with its own problem."""
    kwargs = {name: None if is_link(value) else value for name, value in inputs.items()
              if custom.all_inputs or name in custom.names}
    extra = {"input_types": received_types} if custom.input_types else {}
    if custom.upstream:
        extra["upstream"] = upstream
    result = cls.VALIDATE_INPUTS(**kwargs, **extra)
    if result is True:
        return []
    by_input = getattr(result, "by_input", None) or {name: result for name in kwargs}
    return [error("custom_validation_failed", "Custom validation failed for node",
                  name if problem is False else f"{name} - {problem}", input_name=name)
            for name, problem in by_input.items()]
