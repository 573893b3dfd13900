"""Output file names: ``{name}_{counter:05}_.{ext}``, written first as the hidden temporary
``.{name}_{12 hex}.{ext}.part`` in the same folder. :func:`check_filename_prefix` checks a
``filename_prefix`` against both names before any work, so a run never fails only at its save.

Imports neither torch nor numpy: the node validators and the host use it.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import PurePath

NAME_MAX = 255  # bytes in one path component (Linux, macOS; NTFS counts 255 UTF-16 units)
LONGEST_EXTENSION = "webp"
PART_SUFFIX = ".part"
_TOKEN_HEX = 6  # bytes of randomness in a temporary name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The temporary files of save_video: the only files stale-part cleaning may remove.
PART_PATTERN = re.compile(r"^\..+_[0-9a-f]{%d}\.[a-z0-9]+%s$" % (2 * _TOKEN_HEX, re.escape(PART_SUFFIX)))


def final_name(name: str, counter: int, ext: str) -> str:
    return f"{name}_{counter:05}_.{ext}"


def part_name(name: str, ext: str) -> str:
    """A fresh hidden temporary name for a file that will become ``final_name(name, ...)``."""
    return f".{name}_{secrets.token_hex(_TOKEN_HEX)}.{ext}{PART_SUFFIX}"


def check_filename_prefix(prefix: str) -> None:
    """ValueError unless ``prefix`` is a relative path inside the output folder whose every folder,
    final name and temporary name is a valid file name: no NUL or control characters, encodable,
    at most NAME_MAX bytes (the temporary name is 24 bytes longer than the prefix's last part)."""
    if not isinstance(prefix, str):
        raise ValueError(f"filename_prefix must be text, got {type(prefix).__name__}")
    if _CONTROL.search(prefix):
        raise ValueError(f"filename_prefix {_shown(prefix)} contains a control character (NUL, newline, ...)")
    pure = PurePath(prefix.replace("\\", "/"))
    parts = prefix.replace("\\", "/").split("/")
    if not prefix or pure.is_absolute() or pure.anchor or re.match(r"^[A-Za-z]:", prefix) or ".." in parts:
        raise ValueError(f"filename_prefix {_shown(prefix)} must be a relative path inside the output "
                         "directory (no '..', not absolute, not empty)")
    name = parts[-1]
    if not name or name == ".":
        raise ValueError(f"filename_prefix {_shown(prefix)} has no file name part")
    for folder in parts[:-1]:
        if _encoded_size(prefix, folder) > NAME_MAX:
            raise ValueError(f"filename_prefix {_shown(prefix)}: folder {folder[:40]!r}... is longer than "
                             f"{NAME_MAX} bytes")
    extra = _encoded_size(prefix, part_name(name, LONGEST_EXTENSION)) - _encoded_size(prefix, name)
    if _encoded_size(prefix, name) + extra > NAME_MAX:
        raise ValueError(f"filename_prefix {_shown(prefix)} is too long: its file name part is "
                         f"{_encoded_size(prefix, name)} bytes, and with the counter and temporary "
                         f"suffix ({extra} bytes) at most {NAME_MAX} fit; keep it to "
                         f"{NAME_MAX - extra} bytes")


def _shown(prefix: str) -> str:
    return repr(prefix) if len(prefix) <= 60 else repr(prefix[:40]) + f"... ({len(prefix)} characters)"


def _encoded_size(prefix: str, part: str) -> int:
    try:
        return len(os.fsencode(part))
    except UnicodeEncodeError as e:
        raise ValueError(f"filename_prefix {_shown(prefix)} cannot be a file name: {e.reason}") from None
