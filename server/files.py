"""Paths the server may read or write: the host's input, output and temp folders and the user folder.

Every name that comes from a request goes through :func:`inside`, which resolves symlinks and
``..`` and refuses anything that ends up outside its root, so ``/view``, ``/upload/image`` and
``/userdata`` can neither serve nor write a file elsewhere.
"""

from __future__ import annotations

import os
import re
import tempfile

from ..nodes import host as hosts

FOLDER_TYPES = ("output", "input", "temp")  # the ``type`` of /view and /upload/image
_ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>output|input|temp)\]$")  # "x.png [output]"


class UnsafePath(ValueError):
    """A requested path that would leave its folder (``..``, absolute, a symlink out, NUL)."""


def folder(host: hosts.Host, type_: str) -> str:
    """The directory of a file ``type`` ("output", "input" or "temp")."""
    roots = {"output": host.output_dir, "input": host.input_dir, "temp": host.temp_dir}
    if type_ not in roots:
        raise ValueError(f"type {type_!r} is not one of {', '.join(FOLDER_TYPES)}")
    return roots[type_]()


def split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """ComfyUI's annotated names: ``"x.png [input]"`` → ``("x.png", "input")``."""
    match = _ANNOTATION.match(filename)
    return (match["name"], match["type"]) if match else (filename, default_type)


def inside(root: str, *parts: str) -> str:
    """The real path of ``root/parts...``; UnsafePath unless it is strictly inside ``root``."""
    if any("\0" in part for part in parts):
        raise UnsafePath("path contains a NUL byte")
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, *(p.replace("\\", "/") for p in parts)))
    try:
        contained = os.path.commonpath([root, path]) == root and path != root
    except ValueError:  # different drives
        contained = False
    if not contained:
        raise UnsafePath(f"{'/'.join(p for p in parts if p)!r} is outside the folder")
    return path


def check_filename(name: str) -> str:
    """An uploaded file's name: one plain path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UnsafePath(f"file name {name!r} must be a plain name without folders")
    return name


def free_name(directory: str, name: str) -> str:
    """``name``, or ``stem (1).ext``, ``stem (2).ext``, ... whichever does not exist yet."""
    stem, ext = os.path.splitext(name)
    candidate, i = name, 0
    while os.path.exists(os.path.join(directory, candidate)):
        i += 1
        candidate = f"{stem} ({i}){ext}"
    return candidate


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so readers never see half a file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
