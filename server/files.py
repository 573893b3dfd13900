"""Paths the server may read or write: the host's input, output and temp folders and the user folder.

Every name that comes from a request goes through :func:`inside`, which resolves symlinks and
``..`` and refuses anything that ends up outside its root, so ``/view``, ``/upload/image`` and
``/userdata`` can neither serve nor write a file elsewhere.

Files go back through :func:`file_response`: only the media types the frontend shows inline are
served as such; anything else (HTML, SVG, scripts, ...) is an ``application/octet-stream``
download, so a stored file can never run as a page on the server's origin.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse

from aiohttp import web

from ..nodes import host as hosts
from ..wan_core.file_names import NAME_MAX

FOLDER_TYPES = ("output", "input", "temp")  # the ``type`` of /view and /upload/image
_ANNOTATION = re.compile(r"^(?P<name>.*) \[(?P<type>output|input|temp)\]$")  # "x.png [output]"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What the frontend shows inline: previews (/view) and the user's files it loads (/userdata).
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp", ".mp4": "video/mp4", ".webm": "video/webm",
               ".mov": "video/quicktime", ".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac",
               ".ogg": "audio/ogg"}
USER_TYPES = {".json": "application/json", ".css": "text/css"}


class UnsafePath(ValueError):
    """A requested path that would leave its folder (``..``, absolute, a symlink out)."""


class BadName(ValueError):
    """A requested name no file can have: NUL or control characters, not encodable, too long."""


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
    """The real path of ``root/parts...``; UnsafePath unless it is strictly inside ``root``,
    BadName if a part is no possible file name."""
    for part in parts:
        check_name(part)
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, *(p.replace("\\", "/") for p in parts)))
    try:
        contained = os.path.commonpath([root, path]) == root and path != root
    except ValueError:  # different drives
        contained = False
    if not contained:
        raise UnsafePath(f"{'/'.join(p for p in parts if p)!r} is outside the folder")
    return path


def check_name(path: str) -> None:
    """BadName unless every component of ``path`` is a possible file name."""
    if _CONTROL.search(path):
        raise BadName(f"{_shown(path)} contains a control character (NUL, newline, ...)")
    for component in path.replace("\\", "/").split("/"):
        try:
            size = len(component.encode("utf-8"))  # strict: undecodable request bytes are refused
        except UnicodeEncodeError as e:
            raise BadName(f"{_shown(path)} cannot be a file name: {e.reason}") from None
        if size > NAME_MAX:
            raise BadName(f"{_shown(path)} is too long: a file or folder name has at most {NAME_MAX} bytes")


def check_filename(name: str) -> str:
    """An uploaded file's name: one plain path component (with room for a `` (N)`` suffix)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UnsafePath(f"file name {_shown(name)} must be a plain name without folders")
    check_name(name + " (1000)")
    return name


def file_response(path: str, inline_types: dict[str, str], **headers: str) -> web.FileResponse:
    """``path`` inline if its extension is one of ``inline_types``, else as a download that no
    browser renders; ``nosniff`` either way."""
    name = os.path.basename(path)
    content_type = inline_types.get(os.path.splitext(name)[1].lower())
    disposition = "inline" if content_type else "attachment"
    return web.FileResponse(path, headers={
        **headers, "Content-Type": content_type or "application/octet-stream",
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{urllib.parse.quote(name)}",
        "X-Content-Type-Options": "nosniff"})


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:40]) + f"... ({len(name)} characters)"


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
