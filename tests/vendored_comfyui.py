"""The real ComfyUI 0.33.0 from ``../shared/vendor`` as a test peer (read its README there).

- ``ComfyUI.unpack(dest)`` unpacks the snapshot once per session (about a second).
- ``comfyui.run(script, ...)`` runs a probe script in a subprocess with ComfyUI's folder first on
  ``sys.path`` (``comfy``, ``nodes``, ``folder_paths`` are ComfyUI's own) and the
  torchvision/torchaudio shims of ``comfyui_shims/`` installed; the script prints its result.
- ``comfyui.serve(base)`` starts ComfyUI's own server (``main.py --cpu``) on a loopback port with
  this checkout cloned-in as ``custom_nodes/ComfyUI-WanRT`` (and the test-only nodes of
  ``comfyui_test_nodes/``); ``queue(url, prompt)`` runs an API prompt through ComfyUI's executor
  and returns its history entry.

Its Python requirements (less torchvision/torchaudio) are in the ``test`` extra.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; WANRT_SHARED_DIR names it where it is elsewhere (git worktrees).
SHARED = Path(os.environ.get("WANRT_SHARED_DIR", ROOT.parent / "shared"))
SNAPSHOT = SHARED / "vendor" / "ComfyUI-0.33.0-783545f6.tar.xz"
LAUNCH = Path(__file__).resolve().parent / "comfyui_shims" / "launch.py"
TEST_NODES = Path(__file__).resolve().parent / "comfyui_test_nodes"  # see its docstring
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "clip_vision", "loras")
PACK_NAME = "ComfyUI-WanRT"  # the folder name a `git clone` into custom_nodes/ gives
START_TIMEOUT = 120  # seconds for ComfyUI to import its nodes and ours on a busy 2-core machine


class ComfyUI:
    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def unpack(cls, dest: Path) -> "ComfyUI":
        if not SNAPSHOT.is_file():
            raise FileNotFoundError(f"the vendored ComfyUI snapshot is missing: {SNAPSHOT}")
        with tarfile.open(SNAPSHOT) as archive:
            archive.extractall(dest, filter="data")
        return cls(dest / "ComfyUI")

    def run(self, script: Path, *args: str, timeout: float = 300) -> str:
        """Run ``script`` inside ComfyUI's import world; its stdout, or AssertionError with stderr."""
        result = subprocess.run([sys.executable, str(LAUNCH), str(self.root), str(script), *args],
                                cwd=self.root, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{script.name} failed in ComfyUI:\n{result.stderr[-4000:]}"
        return result.stdout

    @staticmethod
    def base_directory(base: Path, models: Path | None = None) -> Path:
        """ComfyUI's ``--base-directory``: the pack and the test nodes in custom_nodes, model
        folders from ``models``."""
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / PACK_NAME).symlink_to(ROOT, target_is_directory=True)
        (base / "custom_nodes" / TEST_NODES.name).symlink_to(TEST_NODES, target_is_directory=True)
        for folder in MODEL_FOLDERS:
            target = base / "models" / folder
            target.parent.mkdir(parents=True, exist_ok=True)
            if models is not None and (models / folder).is_dir():
                target.symlink_to(models / folder, target_is_directory=True)
            else:
                target.mkdir(exist_ok=True)
        for folder in ("input", "output", "user", "temp"):
            (base / folder).mkdir(exist_ok=True)
        return base

    @contextlib.contextmanager
    def serve(self, base: Path):
        """ComfyUI's own server on ``base`` (see ``base_directory``); yields its URL."""
        port = _free_port()
        log = (base / "comfyui.log").open("w")
        process = subprocess.Popen(
            [sys.executable, str(LAUNCH), str(self.root), str(self.root / "main.py"), "--cpu",
             "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
             "--disable-api-nodes", "--disable-auto-launch"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, base / "comfyui.log")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def queue(url: str, prompt: dict, timeout: float = 600) -> dict:
    """Run an API prompt through ComfyUI's executor; its history entry once it has finished."""
    answer = requests.post(f"{url}/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = requests.get(f"{url}/history/{prompt_id}").json()
        if prompt_id in history:  # ComfyUI writes the entry when the prompt has ended
            return history[prompt_id]
        time.sleep(0.25)
    raise TimeoutError(f"ComfyUI did not finish prompt {prompt_id} in {timeout} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/system_stats", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"ComfyUI did not start in {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")
