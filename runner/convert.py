"""Workflow JSON (UI or API format) → API prompt, as the ComfyUI frontend's ``graphToPrompt`` does.

UI → API (comfyui.md §2.3–2.5): widget values are mapped to input names in ``INPUT_TYPES`` order,
skipping the saved control_after_generate / upload helper values; links are followed through
``Reroute`` nodes, bypassed nodes (an input of the requested type passes through) and subgraph
boundaries (inner nodes get ids ``"<instance>:<inner>"``); ``PrimitiveNode`` values are pushed into
the inputs they feed; notes, muted nodes and bypassed nodes are not emitted. A V3 dynamic combo
(``SaveVideo``'s ``format``) is followed by the widgets of its chosen option, named
``"format.codec"`` as ComfyUI's API prompts name them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

from .errors import PromptError, error
from .nodedefs import WIDGET_TYPES, node_inputs, types_match

VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
MUTED, BYPASS = 2, 4  # litegraph node modes (0 = always)
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = "-10", "-20"  # node ids of a subgraph's boundary


def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def to_api_prompt(workflow: Mapping, node_classes: Mapping[str, type]) -> dict:
    """The API prompt ``{node_id: {"class_type", "inputs", "_meta"}}`` of a UI workflow, an API
    prompt or a ``POST /prompt`` body ``{"prompt": {...}}``. The input is not modified. Anything
    malformed is a PromptError."""
    if is_ui_workflow(workflow):
        try:
            return _Converter(workflow, node_classes).convert()
        except PromptError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as e:
            raise PromptError(error("invalid_prompt", "Malformed UI workflow",
                                    f"{type(e).__name__}: {e} (a node or link lacks a field or has one of "
                                    "the wrong type)")) from e
    prompt = workflow.get("prompt") if isinstance(workflow, dict) and isinstance(workflow.get("prompt"), dict) \
        else workflow
    if not isinstance(prompt, dict) or not all(isinstance(node, dict) for node in prompt.values()):
        raise PromptError(error(
            "invalid_prompt", "Not a ComfyUI workflow",
            "expected UI JSON with 'nodes' and 'links', or an API prompt {node_id: {class_type, inputs}}"))
    try:
        api = {str(node_id): copy.deepcopy(node) for node_id, node in prompt.items()}
    except RecursionError as e:
        raise PromptError(error("invalid_prompt", "Not a ComfyUI workflow", "it nests too deeply")) from e
    for node_id, node in api.items():
        node.setdefault("inputs", {})
        if not isinstance(node["inputs"], dict):
            raise PromptError(error("invalid_prompt", "Bad node inputs",
                                    f"node {node_id}: 'inputs' must be an object {{name: value}}", node_id=node_id))
    return api


def apply_overrides(prompt: dict, overrides: Mapping[str, object], node_classes: Mapping[str, type]) -> None:
    """Set inputs in place: ``{"NODE_ID.input": value}``. Node ids may contain ``:`` and input
    names ``.``; a list value is a link ``[node_id, slot]`` as in API prompts."""
    for key, value in overrides.items():
        node_id, name = _split_override_key(prompt, key)
        node = prompt[node_id]
        cls = node_classes.get(node.get("class_type"))
        if cls is not None and name not in (known := node_inputs(cls)):
            raise PromptError(error(
                "invalid_prompt", "Unknown input in override",
                f"{key}: node {node_id} ({node['class_type']}) has no input {name!r}; inputs: {', '.join(known)}",
                node_id=node_id, input_name=name))
        node["inputs"][name] = value


def _split_override_key(prompt: dict, key: str) -> tuple[str, str]:
    dots = [i for i, c in enumerate(key) if c == "."]
    for i in reversed(dots):  # the longest node id that exists
        if key[:i] in prompt:
            return key[:i], key[i + 1:]
    raise PromptError(error(
        "invalid_prompt", "Bad override",
        f"{key!r} is not NODE_ID.input with one of the node ids {', '.join(prompt)}"))


@dataclasses.dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


@dataclasses.dataclass(frozen=True)
class _Value:
    """A constant that replaces a link (a PrimitiveNode's or a promoted subgraph widget's value)."""

    value: object


@dataclasses.dataclass(frozen=True)
class _Scope:
    """One graph level: the root, or the inside of one subgraph instance."""

    nodes: dict[str, dict]
    links: dict[str, _Link]
    prefix: str = ""  # "" at the root, "12:" inside instance 12, "12:5:" deeper
    instance: dict | None = None
    definition: dict | None = None
    parent: _Scope | None = None
    stack: tuple[str, ...] = ()  # subgraph definition ids entered, to reject recursion


def _index_nodes(nodes) -> dict[str, dict]:
    return {str(node["id"]): node for node in nodes or []}


def _index_links(links) -> dict[str, _Link]:
    """Links as ``[id, origin, origin_slot, target, target_slot, type]`` (0.4) or objects (v1)."""
    index = {}
    for link in links or []:
        if isinstance(link, dict):
            link_id, fields = link["id"], (link["origin_id"], link["origin_slot"], link["target_id"],
                                           link["target_slot"], link.get("type"))
        else:
            link_id, fields = link[0], link[1:6]
        origin, origin_slot, target, target_slot, type_ = fields
        index[str(link_id)] = _Link(str(origin), int(origin_slot), str(target), int(target_slot), type_)
    return index


def _subgraph_definitions(container: dict, found: dict[str, dict]) -> dict[str, dict]:
    for definition in (container.get("definitions") or {}).get("subgraphs") or []:
        found[definition["id"]] = definition
        _subgraph_definitions(definition, found)
    return found


def _expand_dynamic(specs, value_of):
    """``specs`` with each dynamic combo followed by the widgets of its chosen option."""
    for spec in specs:
        yield spec
        if spec.is_dynamic_combo:
            chosen = value_of(spec.name)
            yield from _expand_dynamic([s for s in spec.option_inputs(spec.default if chosen is None else chosen)
                                        if s.has_widget], value_of)


def _wrap(value):
    """API prompts reserve bare lists for links; list values travel as ``{"__value__": [...]}``."""
    return {"__value__": value} if isinstance(value, list) else value


class _Converter:
    def __init__(self, workflow: dict, node_classes: Mapping[str, type]):
        self.workflow = workflow
        self.classes = node_classes
        self.subgraphs = _subgraph_definitions(workflow, {})
        self.prompt: dict[str, dict] = {}

    def convert(self) -> dict:
        self._emit_graph(_Scope(_index_nodes(self.workflow["nodes"]), _index_links(self.workflow.get("links"))))
        return self.prompt

    def _emit_graph(self, scope: _Scope) -> None:
        for node in scope.nodes.values():
            if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASS):
                continue
            if node["type"] in self.subgraphs:
                self._emit_graph(self._enter(scope, node))
            else:
                self._emit_node(scope, node)

    def _emit_node(self, scope: _Scope, node: dict) -> None:
        node_id = scope.prefix + str(node["id"])
        cls = self.classes.get(node["type"])
        inputs = self._widget_inputs(node_id, node, cls) if cls is not None else {}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot["name"]
            source = self._resolve_link(scope, slot["link"])
            if isinstance(source, _Value):
                inputs[name] = _wrap(source.value)
            elif source is not None:
                inputs[name] = source
        self.prompt[node_id] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node["type"]}}

    def _widget_inputs(self, node_id: str, node: dict, cls) -> dict:
        specs = [spec for spec in node_inputs(cls).values() if spec.has_widget]
        values = node.get("widgets_values")
        named = values if isinstance(values, dict) else node.get("widgets_values_named")
        if isinstance(named, dict):
            taken = {spec.name: named[spec.name] for spec in _expand_dynamic(specs, named.get)
                     if spec.name in named}
        else:
            values, taken, i = values or [], {}, 0
            pending = list(specs)
            while pending:  # a dynamic combo's chosen option inserts its widgets after it
                spec = pending.pop(0)
                if i < len(values):
                    taken[spec.name] = values[i]
                i += 1 + spec.helper_values
                if spec.is_dynamic_combo:
                    pending[:0] = [s for s in spec.option_inputs(taken.get(spec.name, spec.default))
                                   if s.has_widget]
            if len(values) > i:
                raise PromptError(error(
                    "invalid_prompt", "Too many widget values",
                    f"node {node_id} ({node['type']}) saved {len(values)} widget values {values}, but its "
                    f"widgets {[s.name for s in specs]} (with their control/upload helpers) take {i}",
                    node_id=node_id, class_type=node["type"]))
        for spec in _expand_dynamic(specs, taken.get):  # an older save lacks newer widgets: defaults
            if spec.name not in taken and spec.default is not None:
                taken[spec.name] = spec.default
        return {name: _wrap(value) for name, value in taken.items()}

    def _enter(self, scope: _Scope, instance: dict) -> _Scope:
        definition = self.subgraphs[instance["type"]]
        if definition["id"] in scope.stack:
            raise PromptError(error("invalid_prompt", "Subgraph contains itself",
                                    f"subgraph {definition.get('name', definition['id'])!r}"))
        return _Scope(_index_nodes(definition.get("nodes")), _index_links(definition.get("links")),
                      f"{scope.prefix}{instance['id']}:", instance, definition, scope,
                      scope.stack + (definition["id"],))

    def _resolve_link(self, scope: _Scope, link_id) -> list | _Value | None:
        """What feeds a link: ``[node_id, slot]``, a constant, or None (the input is dropped)."""
        link = scope.links.get(str(link_id))
        if link is None:
            raise PromptError(error("invalid_prompt", "Broken link",
                                    f"link {link_id} is used by a node but not defined in 'links'"))
        return self._resolve_output(scope, link.origin_id, link.origin_slot, link.type)

    def _resolve_output(self, scope: _Scope, node_id: str, slot: int, type_) -> list | _Value | None:
        if node_id == SUBGRAPH_INPUT:
            return self._resolve_subgraph_input(scope, slot)
        node = scope.nodes.get(node_id)
        if node is None:
            raise PromptError(error("invalid_prompt", "Broken link", f"a link starts at missing node {node_id}"))
        mode, kind = node.get("mode", 0), node["type"]
        if mode == MUTED:
            return None
        if mode == BYPASS:
            return self._resolve_bypassed(scope, node, slot, type_)
        if kind == "Reroute":
            inputs = node.get("inputs") or [{}]
            return self._resolve_link(scope, inputs[0]["link"]) if inputs[0].get("link") is not None else None
        if kind == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return _Value(values[0]) if values else None
        if kind in self.subgraphs:
            inner = self._enter(scope, node)
            feed = next((link for link in inner.links.values()
                         if link.target_id == SUBGRAPH_OUTPUT and link.target_slot == slot), None)
            return None if feed is None else self._resolve_output(inner, feed.origin_id, feed.origin_slot, feed.type)
        if kind in VIRTUAL_NODES:
            return None
        return [scope.prefix + node_id, slot]

    def _resolve_bypassed(self, scope: _Scope, node: dict, slot: int, type_) -> list | _Value | None:
        """A bypassed node passes through its input with the same slot if the type fits, else its
        first input of exactly the requested type, else its first compatible one."""
        inputs = node.get("inputs") or []
        if slot < len(inputs) and types_match(inputs[slot].get("type"), type_):
            chosen = inputs[slot]
        else:
            chosen = next((i for i in inputs if i.get("type") == type_), None) or \
                next((i for i in inputs if types_match(i.get("type"), type_)), None)
        if chosen is None or chosen.get("link") is None:
            return None
        return self._resolve_link(scope, chosen["link"])

    def _resolve_subgraph_input(self, scope: _Scope, slot: int) -> list | _Value | None:
        """Follow the instance's outer link; unlinked, use the instance's promoted widget value
        (``widgets_values`` holds one per widget-typed input of the definition, in order, even
        when the saved instance dropped its unlinked widget sockets), else the inner widget keeps
        its value."""
        definition_inputs = scope.definition["inputs"]
        name = definition_inputs[slot].get("name")
        outer = {i.get("name"): i for i in scope.instance.get("inputs") or []}
        if name in outer and outer[name].get("link") is not None:
            return self._resolve_link(scope.parent, outer[name]["link"])
        # widget inputs: a saved widget socket, or a widget-typed input whose socket was dropped
        widgets = [i.get("name") for i in definition_inputs
                   if (bool(outer[i.get("name")].get("widget")) if i.get("name") in outer
                       else i.get("type") in WIDGET_TYPES)]
        values = scope.instance.get("widgets_values") or []
        if name in widgets and widgets.index(name) < len(values):
            return _Value(values[widgets.index(name)])
        return None
