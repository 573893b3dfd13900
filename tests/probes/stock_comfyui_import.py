"""Probe, run inside the vendored ComfyUI (``ComfyUI.run``): load the pack as ComfyUI loads a
cloned custom node, with the packages ComfyUI does not install hidden; print what registered
and what Wan's prompt cleaning says when it runs. Argument: the pack folder."""

import asyncio
import importlib
import json
import sys

for missing in ("ftfy", "imageio", "imageio_ffmpeg"):
    sys.modules[missing] = None  # "import ftfy" raises ImportError, as in a stock ComfyUI

pack = sys.argv[1]
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI parses its own arguments on import
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import nodes  # noqa: E402

loaded = asyncio.run(nodes.load_custom_node(pack))
tokenizer = importlib.import_module(pack.replace(".", "_x_") + ".wan_core.text_encoder.tokenizer")
try:
    tokenizer.clean_prompt("a fox")
    message = None
except ImportError as error:
    message = str(error)
print(json.dumps({"loaded": loaded, "nodes": sorted(n for n in nodes.NODE_CLASS_MAPPINGS if n.startswith("WanRT")),
                  "clean_prompt": message}))
