"""``python launch.py COMFYUI_DIR SCRIPT [ARGS...]``: run SCRIPT (e.g. ComfyUI's ``main.py``, or a
test's probe script) as ``__main__`` with the vendored ComfyUI first on ``sys.path`` and the
torchvision/torchaudio shims installed (see ``torch_media_shim``)."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_media_shim  # noqa: E402

torch_media_shim.install()
comfy_dir, script, *args = sys.argv[1:]
sys.path.insert(0, comfy_dir)
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
