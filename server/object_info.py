"""``GET /object_info``: node definitions in ComfyUI's shape (comfyui.md §3.5), which drive the
frontend's node library, widgets and link type checks."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..runner.nodedefs import is_output_node, return_types

# ComfyUI names a custom-node pack's module "custom_nodes.<folder>"; the frontend shows it as the
# node's source badge.
PYTHON_MODULE = "custom_nodes.wanrt"

log = logging.getLogger(__name__)


def node_info(name: str, cls: type, display_name: str | None = None) -> dict:
    """One node class as ComfyUI describes a classic (V1) node."""
    inputs = cls.INPUT_TYPES()
    outputs = list(return_types(cls))
    return {
        "input": inputs,
        "input_order": {section: list(specs) for section, specs in inputs.items()},
        "is_input_list": bool(getattr(cls, "INPUT_IS_LIST", False)),
        "output": outputs,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", [None] * len(outputs))),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": PYTHON_MODULE,
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": is_output_node(cls),
        "has_intermediate_output": False,
        "deprecated": bool(getattr(cls, "DEPRECATED", False)),
        "experimental": bool(getattr(cls, "EXPERIMENTAL", False)),
        "search_aliases": list(getattr(cls, "SEARCH_ALIASES", [])),
    }


def object_info(classes: Mapping[str, type], display_names: Mapping[str, str]) -> dict:
    """Every node that can describe itself; a node whose ``INPUT_TYPES`` raises is left out (and
    logged), as ComfyUI does, so one broken node does not hide the others."""
    info = {}
    for name, cls in classes.items():
        try:
            info[name] = node_info(name, cls, display_names.get(name))
        except Exception:
            log.exception("object_info: node %s cannot describe itself; left out", name)
    return info
