"""Helpers shared by WanRT node classes: model-file inputs and their checks, the output prefix check.

A loader declares its file input with ``model_file_input`` and names it in ``VALIDATE_INPUTS``
with ``validate_model_file``, so a missing file is reported before any work with the folders
that were searched (rather than as a bare "value not in list").
"""

from __future__ import annotations

from . import host

CATEGORY = "WanRT"


class InvalidInputs(str):
    """A ``VALIDATE_INPUTS`` failure that says which input has which problem.

    ComfyUI shows the whole text under every input the method takes; WanRT's runner and server
    read ``by_input`` and report each input's own problem only."""

    def __new__(cls, by_input: dict[str, str]):
        text = super().__new__(cls, "; ".join(by_input.values()))
        text.by_input = dict(by_input)
        return text


def upstream_model_file(upstream: dict | None, input_name: str, loader: type) -> str | None:
    """The file a linked ``input_name`` will be loaded from, when it comes straight from a
    ``loader`` node with the file as a widget value (``upstream``: see the runner's validation)."""
    source = (upstream or {}).get(input_name)
    if source is None or source["class_type"] != loader.__name__:
        return None
    return source["inputs"].get(loader.INPUT_NAME)


def model_file_input(folder: str, tooltip: str) -> tuple[list[str], dict]:
    """A combo input listing the model files of ``folder`` ("diffusion_models", "vae", ...)."""
    return host.current().model_files(folder), {"tooltip": tooltip}


def validate_model_file(folder: str, filename: str) -> bool | str:
    """``True`` if ``filename`` exists in ``folder``, else a message naming the folders searched."""
    try:
        host.current().model_path(folder, filename)
    except host.ModelNotFoundError as e:
        return str(e)
    return True


def validate_filename_prefix(prefix: str) -> bool | str:
    """``True`` if ``prefix`` stays inside the output directory, else why not."""
    try:
        host.check_filename_prefix(prefix)
    except ValueError as e:
        return str(e)
    return True
