"""Probe run inside the vendored ComfyUI (``ComfyUI.run``): print ComfyUI's ``/object_info``
entries (input, input_order, output, output_name, category) of the node classes named in argv[1]
(comma-separated) as JSON, without starting its server."""

import sys

names = sys.argv[1].split(",")
sys.argv[1:] = ["--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import asyncio  # noqa: E402
import json  # noqa: E402

import nodes  # noqa: E402
from comfy_api.internal import _ComfyNodeInternal  # noqa: E402

asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
info = {}
for name in names:
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    if issubclass(cls, _ComfyNodeInternal):  # V3: what server.node_info serves
        entry = cls.GET_NODE_INFO_V1()
    else:
        types = cls.INPUT_TYPES()
        entry = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                 "output": cls.RETURN_TYPES, "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
                 "category": getattr(cls, "CATEGORY", "sd")}
    info[name] = {k: entry[k] for k in ("input", "input_order", "output", "output_name", "category")}
print(json.dumps(info))
