"""Helpers shared by WanRT node classes: model-file inputs and their checks, the output prefix check.

A loader declares its file input with ``model_file_input`` and names it in ``VALIDATE_INPUTS``
with ``validate_model_file``, so a missing file is reported before any work with the folders
that were searched (rather than as a bare "value not in list").
"""

from __future__ import annotations

from . import host

CATEGORY = "WanRT"


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
