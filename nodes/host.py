"""The host adapter: the one interface WanRT nodes use for model files, output folders, progress,
interrupts and devices.

Nodes call ``current()`` and use the returned :class:`Host`::

    path = host.current().model_path("vae", vae_name)
    bar = host.current().progress(steps)

Inside ComfyUI (detected when first asked: ``folder_paths`` is already imported) the calls go to
``folder_paths``, ``comfy.utils.ProgressBar`` and ``comfy.model_management``. Headless they go to
a :class:`HeadlessHost`: model folders under ``--models-dir`` / ``$WANRT_MODELS_DIR`` / an
``extra_model_paths.yaml``, tqdm progress bars and an interrupt flag. Nothing here imports
ComfyUI (or torch) at module import time.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import posixpath
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

from ..wan_core import file_names

# Folder kinds of ComfyUI's folder_paths that WanRT reads, with the sub-folders of a models
# directory searched for each (ComfyUI's defaults, in its order).
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("unet", "diffusion_models"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "clip_vision": ("clip_vision",),
    "loras": ("loras",),
}
# ComfyUI's legacy names (folder_paths.map_legacy).
FOLDER_ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}
# The example images of the workflows in workflows/: the headless input folder unless one is given.
EXAMPLE_INPUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "workflows", "inputs")
# folder_paths.supported_pt_extensions
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# Bounds on listing a model folder, so a symlink loop or a folder pointed at "/" stays cheap:
# sub-folder depth, and folders read per listing.
MODEL_FOLDER_DEPTH = 8
MODEL_FOLDER_SCAN_LIMIT = 10_000

ProgressHook = Callable[[int, int, object], None]


class ModelNotFoundError(ValueError):
    """A model file is in none of the folders of its kind; the message names the folders."""

    def __init__(self, folder: str, filename: str, searched: list[str]):
        where = ", ".join(searched) if searched else (
            "no folders are configured (pass --models-dir, set WANRT_MODELS_DIR or use "
            "--extra-model-paths)")
        super().__init__(f"model file {filename!r} not found in the {folder!r} folders: {where}")
        self.folder, self.filename, self.searched = folder, filename, searched


class Interrupted(Exception):
    """The run was interrupted (``Host.interrupt()`` or Ctrl-C)."""


def check_filename_prefix(prefix: str) -> None:
    """Reject a ``filename_prefix`` that could leave the output directory (absolute or ``..``) or
    whose final or temporary file names could not be written (too long, NUL, ...)."""
    file_names.check_filename_prefix(prefix)


def canonical_folder(folder: str) -> str:
    return FOLDER_ALIASES.get(folder, folder)


class Host:
    """What nodes may ask of their environment. Two implementations: ComfyHost, HeadlessHost."""

    # Called on every progress update with (value, total, preview) by hosts that draw their own
    # progress (headless); the runner sets it to forward progress events.
    on_progress: ProgressHook | None = None
    # False on the ranks of a parallel run other than rank 0: save nodes write nothing there.
    writes_outputs = True

    def model_folders(self, folder: str) -> list[str]:
        """Directories searched for ``folder`` ("diffusion_models", "vae", "unet", ...)."""
        raise NotImplementedError

    def model_files(self, folder: str) -> list[str]:
        """Sorted relative paths (forward slashes) of the model files of ``folder``."""
        raise NotImplementedError

    def model_path(self, folder: str, filename: str) -> str:
        """Full path of ``filename`` in ``folder``; raises ModelNotFoundError naming the folders."""
        raise NotImplementedError

    def output_dir(self) -> str:
        raise NotImplementedError

    def input_dir(self) -> str:
        raise NotImplementedError

    def temp_dir(self) -> str:
        raise NotImplementedError

    def progress(self, total: int):
        """A progress bar with ``update(n)`` and ``update_absolute(value, total, preview)``."""
        raise NotImplementedError

    def interrupt(self) -> None:
        """Ask the running node to stop at its next progress update (or before the next node)."""
        raise NotImplementedError

    def clear_interrupt(self) -> None:
        raise NotImplementedError

    def step_interrupt(self) -> None:
        """The interrupt check of a sampling step: where every rank of a parallel run is in
        step, so all stop together (see ``HeadlessHost.parallel``)."""
        self.throw_if_interrupted()

    def throw_if_interrupted(self) -> None:
        raise NotImplementedError

    def is_interrupt(self, exc: BaseException) -> bool:
        """Whether ``exc`` means "the user stopped the run" rather than a failure."""
        raise NotImplementedError

    def device(self):
        """The torch device to compute on."""
        raise NotImplementedError

    def offload_device(self):
        """The torch device to park weights on when they are not in use."""
        raise NotImplementedError

    def residency(self):
        """The one ``wan_core.residency.Residency`` of this process: where every WanRT model is,
        and the memory budget they share."""
        raise NotImplementedError


class ComfyHost(Host):
    """Delegates to ComfyUI's ``folder_paths``, ``comfy.utils`` and ``comfy.model_management``."""

    @staticmethod
    def _comfy(module: str):
        return importlib.import_module(module)

    def model_folders(self, folder):
        return list(self._comfy("folder_paths").get_folder_paths(canonical_folder(folder)))

    def model_files(self, folder):
        return list(self._comfy("folder_paths").get_filename_list(canonical_folder(folder)))

    def model_path(self, folder, filename):
        path = self._comfy("folder_paths").get_full_path(canonical_folder(folder), filename)
        if path is None:
            raise ModelNotFoundError(folder, filename, self.model_folders(folder))
        return path

    def output_dir(self):
        return self._comfy("folder_paths").get_output_directory()

    def input_dir(self):
        return self._comfy("folder_paths").get_input_directory()

    def temp_dir(self):
        return self._comfy("folder_paths").get_temp_directory()


    def progress(self, total):
        return Progress(total, self, ui=self._comfy("comfy.utils").ProgressBar(total))

    def interrupt(self):
        self._comfy("comfy.model_management").interrupt_current_processing(True)

    def clear_interrupt(self):
        self._comfy("comfy.model_management").interrupt_current_processing(False)

    def throw_if_interrupted(self):
        self._comfy("comfy.model_management").throw_exception_if_processing_interrupted()

    def is_interrupt(self, exc):
        return isinstance(exc, self._comfy("comfy.model_management").InterruptProcessingException)

    def device(self):
        return self._comfy("comfy.model_management").get_torch_device()

    def offload_device(self):
        return self._comfy("comfy.model_management").unet_offload_device()

    def residency(self):
        from .comfy_memory import comfy_residency

        return comfy_residency()


class Progress:
    """A progress bar with ComfyUI's ProgressBar interface: a tqdm bar on the console (as core
    KSampler draws one), ``ui`` (ComfyUI's own ProgressBar, inside ComfyUI) and the host's
    ``on_progress`` hook get every update; each update first checks the host's interrupt."""

    def __init__(self, total: int, host: Host, *, console: bool = True, ui=None):
        from tqdm.auto import tqdm

        self.total, self.current, self._host, self._ui = total, 0, host, ui
        self._bar = tqdm(total=total, disable=not console, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.update_absolute(self.current + n)

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self._host.throw_if_interrupted()
        if total is not None:
            self.total = self._bar.total = total
        self.current = min(value, self.total)
        self._bar.n = self.current
        self._bar.refresh()
        if self.current >= self.total:
            self._bar.close()
        if self._ui is not None:
            self._ui.update_absolute(self.current, self.total, preview)
        if self._host.on_progress is not None:
            self._host.on_progress(self.current, self.total, preview)


class HeadlessHost(Host):
    """Model folders, output/input/temp directories, tqdm progress and an interrupt flag."""

    def __init__(self, model_folders: dict[str, list[str]] | None = None, *, output_dir="output",
                 input_dir=None, temp_dir=None, show_progress: bool = True,
                 memory: dict | None = None):
        self._folders: dict[str, list[str]] = {}
        for folder, paths in (model_folders or {}).items():
            for path in paths:
                self.add_model_folder(folder, path)
        self._output = os.path.abspath(output_dir)
        self._input = os.path.abspath(input_dir or EXAMPLE_INPUT_DIR)
        self._temp = os.path.abspath(temp_dir or os.path.join(tempfile.gettempdir(), "wanrt"))
        self.show_progress = show_progress
        self._interrupt = threading.Event()
        self._memory = dict(memory or {})  # Residency options: low_vram, on_cpu, budget_bytes
        self._residency = None
        # In a parallel run (wan_core.parallel) a rank may stop only where all ranks stop
        # together: at sampling steps (step_interrupt); other checks leave the flag for then.
        self.parallel = False

    @classmethod
    def from_paths(cls, models_dir=None, extra_model_paths=None, **kwargs) -> HeadlessHost:
        """``models_dir`` (default ``$WANRT_MODELS_DIR``) laid out like ComfyUI's ``models/``,
        then the folders of an ``extra_model_paths.yaml``; other arguments as for __init__."""
        host = cls(**kwargs)
        models_dir = models_dir or os.environ.get("WANRT_MODELS_DIR")
        if models_dir:
            if not os.path.isdir(models_dir):
                raise ValueError(f"models directory {str(models_dir)!r} does not exist")
            for folder, subdirs in MODEL_FOLDERS.items():
                for sub in subdirs:
                    host.add_model_folder(folder, os.path.join(models_dir, sub))
        if extra_model_paths:
            for folder, path, is_default in read_extra_model_paths(extra_model_paths):
                host.add_model_folder(folder, path, is_default=is_default)
        return host

    def take_part(self, mesh) -> None:
        """Act as one rank of a parallel run (a ``wan_core.parallel.Mesh``): interrupts stop
        the run at sampling steps only; ranks other than 0 write no files and draw no bars."""
        self.parallel = True
        if not mesh.is_writer:
            self.writes_outputs = self.show_progress = False

    def add_model_folder(self, folder: str, path, *, is_default: bool = False) -> None:
        """Like folder_paths.add_model_folder_path: legacy names mapped, a default goes first."""
        paths = self._folders.setdefault(canonical_folder(folder), [])
        path = os.path.abspath(path)
        if path in paths:
            paths.remove(path)
        if is_default:
            paths.insert(0, path)
        else:
            paths.append(path)

    def model_folders(self, folder):
        folder = canonical_folder(folder)
        if folder not in self._folders and folder not in MODEL_FOLDERS:
            raise ValueError(f"unknown model folder {folder!r}; known: "
                             f"{sorted(set(MODEL_FOLDERS) | set(self._folders) | set(FOLDER_ALIASES))}")
        return list(self._folders.get(folder, []))

    def model_files(self, folder):
        found: dict[str, None] = {}
        for root in self.model_folders(folder):
            found.update(dict.fromkeys(list_model_files(root)))
        return sorted(found)

    def model_path(self, folder, filename):
        searched = self.model_folders(folder)
        # Normalised as if rooted, so "../x" cannot leave the folder (as folder_paths does).
        rel = posixpath.normpath("/" + str(filename).replace("\\", "/")).lstrip("/")
        for root in searched:
            path = os.path.join(root, *rel.split("/"))
            if rel and os.path.isfile(path):
                return path
        raise ModelNotFoundError(folder, filename, searched)

    def output_dir(self):
        return self._output

    def input_dir(self):
        return self._input

    def temp_dir(self):
        return self._temp

    def progress(self, total):
        return Progress(total, self, console=self.show_progress)

    def interrupt(self):
        self._interrupt.set()

    def clear_interrupt(self):
        self._interrupt.clear()

    def throw_if_interrupted(self):
        if not self.parallel:
            self._raise_if_interrupted()

    def step_interrupt(self):
        if not self.parallel:
            return self._raise_if_interrupted()
        from ..wan_core.parallel import shared_interrupt
        shared_interrupt(self._raise_if_interrupted)()

    def _raise_if_interrupted(self):
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise Interrupted("interrupted")

    def is_interrupt(self, exc):
        return isinstance(exc, (Interrupted, KeyboardInterrupt))

    def device(self):
        from ..kernels import current_platform

        return current_platform().device()

    def offload_device(self):
        import torch

        return torch.device("cpu")

    def residency(self):
        if self._residency is None:
            from ..wan_core.residency import Residency

            self._residency = Residency(self.device(), self.offload_device(), **self._memory)
        return self._residency


def list_model_files(root: str) -> list[str]:
    """Relative paths (forward slashes) of the model files under ``root``. Symlinks are followed,
    but never into a folder that contains the link (a loop ends there), at most
    MODEL_FOLDER_DEPTH folders deep and MODEL_FOLDER_SCAN_LIMIT folders in all; unreadable
    folders are skipped."""
    found, scanned, todo = [], 0, [(root, "", frozenset())]
    while todo and scanned < MODEL_FOLDER_SCAN_LIMIT:
        path, rel, ancestors = todo.pop()
        try:
            info = os.stat(path)
            if (info.st_dev, info.st_ino) in ancestors:
                continue
            entries = sorted(os.scandir(path), key=lambda e: e.name, reverse=True)
        except OSError:  # missing, unreadable, a dangling link or a loop the kernel refuses
            continue
        scanned += 1
        inner = ancestors | {(info.st_dev, info.st_ino)}
        for entry in entries:
            name = rel + entry.name
            try:
                if entry.is_dir():
                    if len(inner) <= MODEL_FOLDER_DEPTH:
                        todo.append((entry.path, name + "/", inner))
                elif os.path.splitext(entry.name)[1].lower() in MODEL_EXTENSIONS and entry.is_file():
                    found.append(name)
            except OSError:
                continue
    return found


def read_extra_model_paths(path) -> list[tuple[str, str, bool]]:
    """``(folder, directory, is_default)`` entries of a ComfyUI ``extra_model_paths.yaml``.

    Each top-level section may set ``base_path`` (``~`` and ``$VARS`` expanded, relative to the
    YAML file's directory) and ``is_default``; every other key is a folder name whose value holds
    one directory per line, relative to ``base_path`` (or to the YAML file's directory).
    """
    try:
        import yaml
    except ImportError as e:
        raise ImportError(f"reading {path} needs PyYAML: pip install pyyaml") from e
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected sections of 'folder: paths' mappings, got {type(config).__name__}")
    yaml_dir = os.path.dirname(os.path.abspath(path))
    entries = []
    for section, conf in config.items():
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise ValueError(f"{path}: section {section!r} must be a mapping of folder names to paths")
        conf = dict(conf)
        base = conf.pop("base_path", None)
        if base is not None:
            base = os.path.join(yaml_dir, os.path.expandvars(os.path.expanduser(str(base))))
        is_default = bool(conf.pop("is_default", False))
        for folder, value in conf.items():
            for line in str(value).splitlines():
                line = line.strip()
                if line:
                    entries.append((folder, os.path.normpath(os.path.join(base or yaml_dir, line)), is_default))
    return entries


# Per thread / asyncio task, so a server can validate one prompt while its worker runs another.
_active: contextvars.ContextVar[Host | None] = contextvars.ContextVar("wanrt_host", default=None)
_default: Host | None = None


def current() -> Host:
    """The host of the running code: the one activated by the runner, else ComfyUI's when ComfyUI
    is loaded, else a headless host configured from the environment."""
    global _default
    if _active.get() is not None:
        return _active.get()
    if "folder_paths" in sys.modules:
        return ComfyHost()
    if _default is None:
        _default = HeadlessHost.from_paths()
    return _default


@contextlib.contextmanager
def activate(host: Host) -> Iterator[Host]:
    """Make ``host`` what ``current()`` returns inside the ``with`` block (in this thread)."""
    token = _active.set(host)
    try:
        yield host
    finally:
        _active.reset(token)
