"""Video files the way ComfyUI writes them: mp4 (H.264, yuv420p), animated webp and gif, png
frames; the workflow and prompt embedded where the format allows.

Names follow ComfyUI's ``get_save_image_path``: ``{prefix}_{counter:05}_.{ext}`` in the output
folder (``prefix`` may name subfolders), the counter one past the highest already used by any
file of that prefix. Every file is written to a hidden temporary file in its final folder and
then hard-linked into place, which fails instead of overwriting, so a name is never reused and a
failed write leaves nothing behind.

Metadata is a mapping such as ``{"prompt": api_prompt, "workflow": ui_workflow}``; each value is
stored as JSON: mp4 container tags (``movflags use_metadata_tags``, as ComfyUI's ``SaveVideo``),
webp EXIF (``prompt:`` in tag 0x0110, other keys from 0x010F down, as ``SaveAnimatedWEBP``), png
text chunks (as ``SaveImage``). GIF carries none.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePath

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .file_names import PART_PATTERN, check_filename_prefix, final_name, part_name
from .optional_deps import require

FORMATS = ("mp4", "webp", "gif", "png")
EXIF_PROMPT = 0x0110  # "Model"; ComfyUI puts "prompt:<json>" here
EXIF_FIRST_EXTRA = 0x010F  # "Make"; further keys count down from here
MP4_CONTAINER_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}  # ffmpeg's
STALE_PART_SECONDS = 3600.0  # a temporary file untouched this long belongs to a killed run


class VideoWriteError(RuntimeError):
    """The encoder failed; nothing was written."""


@dataclass(frozen=True)
class SavedFile:
    filename: str
    subfolder: str  # relative to the output folder, "/"-separated, "" at top level
    path: Path

    def ui(self, type: str = "output") -> dict:
        """ComfyUI's UI entry ``{"filename", "subfolder", "type"}``."""
        return {"filename": self.filename, "subfolder": self.subfolder, "type": type}


def to_uint8_frames(frames) -> np.ndarray:
    """``[T, H, W, 3]`` float in [0, 1] (clipped, rounded) or uint8, tensor or array → uint8."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
        if frames.dtype.is_floating_point:  # on the frames' device: a quarter of the bytes move
            frames = frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must be [T, H, W, 3] with T, H, W > 0, got {frames.shape}")
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def resolve_prefix(output_dir, filename_prefix: str) -> tuple[Path, str, str]:
    """``filename_prefix`` (``"video/Wan"``) → (folder, file name prefix, subfolder). A prefix that
    fails :func:`check_filename_prefix` or resolves outside ``output_dir`` is a ValueError."""
    check_filename_prefix(filename_prefix)
    subfolder, name = os.path.split(os.path.normpath(filename_prefix))
    root = Path(output_dir).resolve()
    folder = (root / subfolder).resolve()
    if not folder.is_relative_to(root):
        raise ValueError(f"filename_prefix {filename_prefix!r} leads outside {root}")
    return folder, name, PurePath(subfolder).as_posix() if subfolder else ""


def next_counter(folder: Path, name: str) -> int:
    """One past the highest ``N`` of files ``{name}_{N}_…`` in ``folder`` (1 if none)."""
    pattern = re.compile(re.escape(os.path.normcase(name)) + r"_(\d+)(?:_|$)")
    used = [int(m.group(1)) for entry in (os.listdir(folder) if folder.is_dir() else [])
            if (m := pattern.match(os.path.normcase(entry)))]
    return max(used, default=0) + 1


def _publish(tmp: Path, folder: Path, name: str, ext: str, counter: int) -> Path:
    """Give ``tmp`` its final name ``{name}_{counter:05}_.{ext}``, taking the next free counter
    if another writer got there first; never replaces an existing file."""
    while True:
        dst = folder / final_name(name, counter, ext)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            counter += 1
            continue
        except OSError:  # no hard links on this filesystem: check, then rename
            if dst.exists():
                counter += 1
                continue
            os.replace(tmp, dst)
            return dst
        os.unlink(tmp)
        return dst


def _write_new(folder: Path, name: str, ext: str, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_path)`` on a hidden temporary file in ``folder``, then publish it."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(folder)
    tmp = folder / part_name(name, ext)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
    try:
        write(tmp)
        return _publish(tmp, folder, name, ext, next_counter(folder, name))
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_parts(folder: Path, older_than: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete the temporary files of writers that died (killed runs) in ``folder``: only regular
    files named like ours (``.{name}_{12 hex}.{ext}.part``) and untouched for ``older_than``
    seconds, since a live writer (or an encoder it left running) keeps its file's mtime fresh."""
    removed, now = [], time.time()
    for entry in os.scandir(folder):
        if not PART_PATTERN.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > older_than:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # another writer removed it first
            pass
    return removed


def _ff_escape(text: str) -> str:
    return re.sub(r"[=;#\\\n]", lambda m: "\\" + m.group(0), text)


def _ff_unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _ffmetadata(metadata: Mapping[str, object]) -> str:
    """FFmpeg's metadata file: ``key=value`` lines, values as JSON, specials escaped."""
    lines = [";FFMETADATA1"]
    lines += [f"{_ff_escape(key)}={_ff_escape(json.dumps(value))}"
              for key, value in metadata.items()]
    return "\n".join(lines) + "\n"


def _parse_ffmetadata(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        if line and line[0] not in ";[":
            key, value = re.fullmatch(r"((?:[^\\=]|\\.)*)=(.*)", line).groups()
            fields[_ff_unescape(key)] = _ff_unescape(value)
    return fields


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: an odd height/width gets its last row/column repeated."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _ffmpeg_exe() -> str:
    return require("imageio_ffmpeg", "Writing mp4", "imageio-ffmpeg").get_ffmpeg_exe()


def _write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int,
               metadata: Mapping[str, object], check_interrupt: Callable[[], None]) -> None:
    frames = _pad_to_even(frames)
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory() as scratch:
        meta = Path(scratch) / "metadata.txt"
        meta.write_text(_ffmetadata(metadata), encoding="utf-8")
        cmd = [_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(Fraction(fps).limit_denominator(100000)), "-i", "-",
               "-f", "ffmetadata", "-i", str(meta), "-map", "0:v", "-map_metadata", "1",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf),
               "-movflags", "+faststart+use_metadata_tags", "-f", "mp4", str(path)]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=log)
            try:
                try:
                    for frame in frames:
                        check_interrupt()
                        proc.stdin.write(frame.tobytes())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # ffmpeg quit early; its exit code and log say why
                code = proc.wait()
            except BaseException:  # interrupted (Ctrl-C, SIGTERM, the host): stop the encoder now
                proc.kill()
                proc.wait()
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                raise
            if code != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip()[-2000:]
                raise VideoWriteError(f"ffmpeg failed (exit {code}) writing {t} frames "
                                      f"{w}x{h} as mp4: {tail}")


def _exif(metadata: Mapping[str, object]) -> Image.Exif:
    exif = Image.Exif()
    tag = EXIF_FIRST_EXTRA
    for key, value in metadata.items():
        if key == "prompt":
            exif[EXIF_PROMPT] = f"prompt:{json.dumps(value)}"
        else:
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
    return exif


def _write_animation(path: Path, frames: np.ndarray, fps: float, fmt: str, **options) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:],
                   duration=int(1000.0 / fps), loop=0, **options)


def save_video(frames, output_dir, filename_prefix: str = "WanRT", *, format: str = "mp4",
               fps: float = 16.0, crf: int = 19, quality: int = 90, lossless: bool = False,
               metadata: Mapping[str, object] | None = None,
               check_interrupt: Callable[[], None] = lambda: None) -> list[SavedFile]:
    """Save ``frames`` ``[T, H, W, 3]`` (float in [0, 1] or uint8) under ``output_dir``.

    ``format``: ``mp4`` (H.264 yuv420p, quality ``crf`` 0–51, lower is better; odd sizes are
    padded to even by repeating the last row/column), ``webp`` (``quality`` 0–100 or
    ``lossless``), ``gif`` or ``png`` (one ``{prefix}_{counter:05}_.png`` per frame, like
    ``SaveImage``; if one fails, the frames already written are removed). Returns the files.
    ``check_interrupt`` is called before each frame is encoded; what it raises stops the write
    (an interrupt, Ctrl-C or SIGTERM also stops ffmpeg), and no file is left behind.
    Pillow merges identical consecutive webp/gif frames into one longer frame.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is unknown; valid formats: {', '.join(FORMATS)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf!r}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality!r}")
    frames = to_uint8_frames(frames)
    folder, name, subfolder = resolve_prefix(output_dir, filename_prefix)
    metadata = dict(metadata or {})

    if format == "mp4":
        writers = [lambda p: _write_mp4(p, frames, fps, crf, metadata, check_interrupt)]
    elif format == "webp":
        writers = [lambda p: _write_animation(p, frames, fps, "WEBP", quality=quality,
                                              lossless=lossless, method=4,
                                              exif=_exif(metadata))]
    elif format == "gif":
        writers = [lambda p: _write_animation(p, frames, fps, "GIF")]
    else:
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(key, json.dumps(value))
        writers = [lambda p, f=f: Image.fromarray(f).save(p, format="PNG", pnginfo=info,
                                                           compress_level=4) for f in frames]
    written: list[Path] = []
    try:
        for write in writers:
            written.append(_write_new(folder, name, format, write))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return [SavedFile(p.name, subfolder, p) for p in written]


def read_video(path) -> np.ndarray:
    """Decode a saved mp4 / webp / gif back to ``[T, H, W, 3]`` uint8."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        iio = require("imageio.v3", "Reading mp4", "imageio")
        return np.stack(list(iio.imiter(path, plugin="FFMPEG")))
    with Image.open(path) as image:
        frames = []
        for i in range(getattr(image, "n_frames", 1)):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def read_metadata(path) -> dict[str, object]:
    """The JSON metadata :func:`save_video` embedded in an mp4, webp or png file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        out = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
                              "-f", "ffmetadata", "-"], capture_output=True, check=True).stdout
        fields = _parse_ffmetadata(out.decode("utf-8"))
        return {k: json.loads(v) for k, v in fields.items() if k not in MP4_CONTAINER_TAGS}
    with Image.open(path) as image:
        if suffix == ".png":
            return {k: json.loads(v) for k, v in image.text.items()}
        tags = image.getexif()
        pairs = (str(tags[t]).split(":", 1) for t in (EXIF_PROMPT, *range(EXIF_FIRST_EXTRA, 0, -1))
                 if t in tags)
        return {k: json.loads(v) for k, v in pairs}

