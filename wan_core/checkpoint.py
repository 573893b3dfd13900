"""Reading checkpoint files: safetensors (single, sharded, folders) and ``.pth``, lazily.

A :class:`Checkpoint` maps tensor names to their dtype and shape without reading data; tensors are
read one at a time with ``load``, straight from the file into their final buffer, so loading a model
never holds a second full copy in RAM. Every problem is a :class:`CheckpointError` that names the
file and the first offending key.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .runtime import RuntimeOptions, bind_layers

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class CheckpointError(ValueError):
    """A checkpoint is unreadable or is not what the loader expects."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path


class Checkpoint(Mapping[str, TensorInfo]):
    """Read-only lazy view ``name -> TensorInfo`` over one or more files; ``load(name)`` reads."""

    def __init__(self, infos: dict[str, TensorInfo], readers: dict[str, Callable[[], torch.Tensor]],
                 description: str, metadata: dict[str, str] | None = None):
        self._infos = infos
        self._readers = readers
        self.description = description  # file or folder name, for messages
        self.metadata = metadata or {}

    def __getitem__(self, key: str) -> TensorInfo:
        return self._infos[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def load(self, key: str) -> torch.Tensor:
        """Read one tensor (CPU, stored dtype)."""
        try:
            return self._readers[key]()
        except CheckpointError:
            raise
        except Exception as e:  # I/O errors, truncated pickles, ...
            raise CheckpointError(f"{self._infos[key].file}: cannot read tensor {key!r}: {e}") from e

    def renamed(self, rename: Callable[[str], str | None]) -> "Checkpoint":
        """A view with keys mapped by ``rename`` (``None`` drops a key)."""
        infos, readers = {}, {}
        for key, info in self._infos.items():
            new = rename(key)
            if new is None:
                continue
            if new in infos:
                raise CheckpointError(f"{info.file}: keys collide after renaming: {key!r} -> {new!r}")
            infos[new], readers[new] = info, self._readers[key]
        return Checkpoint(infos, readers, self.description, self.metadata)

    def without_prefix(self, *prefixes: str) -> "Checkpoint":
        """Strip the first of ``prefixes`` that most keys carry (e.g. ``model.diffusion_model.``)."""
        for prefix in prefixes:
            if sum(k.startswith(prefix) for k in self._infos) > len(self._infos) // 2:
                return self.renamed(lambda k: k[len(prefix):] if k.startswith(prefix) else k)
        return self


# ---------------------------------------------------------------------------------------------
# safetensors

def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse and validate the header; returns (header dict, offset of the data section)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            if head[:4] == b"GGUF":
                raise CheckpointError(f"{path}: GGUF files are not supported; use a safetensors file")
            raise CheckpointError(f"{path}: not a safetensors file, or its header is truncated "
                                  f"(header length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header: a JSON {type(header).__name__}, "
                              "not an object")
    data_start = 8 + n
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header: __metadata__ must map names to strings")
    for key, entry in header.items():
        if key != "__metadata__":
            _check_header_entry(path, key, entry, data_start, size)
    return header, data_start


def _check_header_entry(path: Path, key: str, entry, data_start: int, size: int) -> None:
    """One tensor's ``{"dtype", "shape", "data_offsets": [begin, end]}``: known dtype, a shape of
    non-negative ints whose byte size is ``end - begin``, inside the file."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt safetensors header: tensor {key!r} {why}")

    if not isinstance(entry, dict):
        raise corrupt(f"is a JSON {type(entry).__name__}, not an object")
    if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {entry.get('dtype')!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise corrupt(f"has shape {shape!r}, not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets) \
            or offsets[0] > offsets[1]:
        raise corrupt(f"has data_offsets {offsets!r}, not [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    if data_start + end > size:
        raise CheckpointError(
            f"{path}: file is truncated: tensor {key!r} needs bytes up to {data_start + end} "
            f"but the file has {size}; download it again")
    nbytes = math.prod(shape) * SAFETENSORS_DTYPES[entry["dtype"]].itemsize
    if nbytes != end - begin:
        raise corrupt(f"of shape {shape} {entry['dtype']} needs {nbytes} bytes, but its data_offsets "
                      f"span {end - begin}")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _safetensors_reader(path: Path, begin: int, end: int, dtype: torch.dtype, shape):
    def read() -> torch.Tensor:
        buf = torch.empty(end - begin, dtype=torch.uint8)
        with open(path, "rb", buffering=0) as f:
            f.seek(begin)
            view = memoryview(buf.numpy())
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{path}: file is truncated while reading")
                got += n
        return buf.view(dtype).reshape(shape)
    return read


def open_safetensors(path: Path) -> Checkpoint:
    header, data_start = _read_safetensors_header(path)
    infos, readers = {}, {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        dtype, shape = SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        infos[key] = TensorInfo(dtype, shape, path)
        readers[key] = _safetensors_reader(path, data_start + begin, data_start + end, dtype, shape)
    return Checkpoint(infos, readers, str(path), header.get("__metadata__") or {})


# ---------------------------------------------------------------------------------------------
# .pth (official Wan VAE / UMT5 / CLIP files): plain state-dict pickles, read with weights_only.

def open_pth(path: Path) -> Checkpoint:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint: {e}") from e
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint (truncated or not "
                              f"a weights-only state dict): {e}") from e
    for wrapper in ("state_dict", "model_state", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    infos = {k: TensorInfo(v.dtype, tuple(v.shape), path) for k, v in sd.items()}
    readers = {k: (lambda v=v: v) for k, v in sd.items()}
    return Checkpoint(infos, readers, str(path))


# ---------------------------------------------------------------------------------------------

def _merge(parts: list[Checkpoint], description: str) -> Checkpoint:
    infos, readers, metadata = {}, {}, {}
    for part in parts:
        for key in part:
            if key in infos:
                raise CheckpointError(f"{description}: tensor {key!r} appears in both "
                                      f"{infos[key].file} and {part[key].file}")
            infos[key], readers[key] = part[key], part._readers[key]
        metadata.update(part.metadata)
    return Checkpoint(infos, readers, description, metadata)


def _open_index(index: Path) -> Checkpoint:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index: {e}") from e
    shards = []
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if not shard.is_file():
            raise CheckpointError(f"{index}: shard {name} listed in the index is missing")
        shards.append(open_safetensors(shard))
    return _merge(shards, str(index.parent))


def open_checkpoint(path: str | os.PathLike, *, stem: str | None = None) -> Checkpoint:
    """Open a checkpoint file, a ``*.safetensors.index.json``, or a folder.

    A folder is read through its index json if it has one, else all ``*.safetensors`` in it
    (only those starting with ``stem`` when given, e.g. ``diffusion_pytorch_model``).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        pattern = f"{stem or ''}*.safetensors"
        indexes = sorted(path.glob(pattern + ".index.json"))
        if indexes:
            return _open_index(indexes[0])
        files = sorted(path.glob(pattern))
        if not files:
            raise CheckpointError(f"{path}: folder has no {pattern} files")
        return _merge([open_safetensors(f) for f in files], str(path))
    if path.name.endswith(".index.json"):
        return _open_index(path)
    if path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        return open_pth(path)
    return open_safetensors(path)


# ---------------------------------------------------------------------------------------------
# fp8 weights (ComfyUI fp8_e4m3fn, legacy scaled_fp8 + scale_weight, newer weight_scale + comfy_quant)

_FP8_SIDECARS = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale", ".comfy_quant")


def fp8_scales(ckpt: Checkpoint) -> tuple[Checkpoint, dict[str, str]]:
    """Split fp8 bookkeeping from weights.

    Returns the checkpoint without scale / marker tensors and ``{weight_key: scale_key}`` for the
    fp8 weights that carry a scale (``<layer>.scale_weight`` or ``<layer>.weight_scale``).
    Unsupported ``comfy_quant`` formats are an error naming the layer.
    """
    scales: dict[str, str] = {}
    layer_formats = json.loads(ckpt.metadata.get("_quantization_metadata", "{}") or "{}")
    layer_formats = layer_formats.get("layers", {}) if isinstance(layer_formats, dict) else {}
    for key in ckpt:
        if key.endswith(".comfy_quant"):
            fmt = json.loads(bytes(ckpt.load(key).tolist()).decode() or "{}")
            layer_formats[key[: -len(".comfy_quant")]] = fmt
        for suffix in (".scale_weight", ".weight_scale"):
            if key.endswith(suffix):
                scales[key[: -len(suffix)] + ".weight"] = key
    for layer, fmt in layer_formats.items():
        name = fmt.get("format") if isinstance(fmt, dict) else None
        if name not in (None, "float8_e4m3fn", "float8_e5m2"):
            raise CheckpointError(f"{ckpt.description}: layer {layer!r} uses quantisation format "
                                  f"{name!r}; only float8_e4m3fn / float8_e5m2 are supported")
    kept = ckpt.renamed(lambda k: None if k == "scaled_fp8" or k.endswith("scaled_fp8")
                        or k.endswith(_FP8_SIDECARS) else k)
    kept._scale_readers = {w: ckpt._readers[s] for w, s in scales.items()}  # type: ignore[attr-defined]
    return kept, scales


# ---------------------------------------------------------------------------------------------
# Assigning weights to a model built on the meta device.

def check_keys(model: nn.Module, ckpt: Checkpoint, what: str) -> None:
    """Fail before reading any data if the checkpoint's names or shapes do not fit the model."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    missing = [k for k in expected if k not in ckpt]
    extra = [k for k in ckpt if k not in expected]
    if missing:
        raise CheckpointError(f"{ckpt.description}: not a {what} checkpoint, or an incomplete one: "
                              f"{len(missing)} expected tensors are missing, first {missing[0]!r}")
    if extra:
        raise CheckpointError(f"{ckpt.description}: {len(extra)} unexpected tensors for a {what} "
                              f"checkpoint, first {extra[0]!r}")
    for k, shape in expected.items():
        if ckpt[k].shape != shape:
            raise CheckpointError(f"{ckpt.description}: tensor {k!r} has shape {ckpt[k].shape}, "
                                  f"expected {shape} for this {what}")


def assign_weights(model: nn.Module, ckpt: Checkpoint, *, what: str, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = "cpu", scales: dict[str, str] | None = None,
                   keep_fp8: bool = False) -> nn.Module:
    """Fill a meta-device ``model`` from ``ckpt`` tensor by tensor (no second copy in RAM).

    Floating tensors are cast to ``dtype`` (or kept as stored when None). fp8 weights are
    dequantised (``w * scale``) unless ``keep_fp8``: then they stay fp8 and their scale is kept as
    ``<weight>_scale`` attribute for layers that dequantise at matmul time. The dispatching
    layers are bound for ``device`` (``RuntimeOptions.for_device``: torch layers on the CPU).
    """
    check_keys(model, ckpt, what)
    scale_readers = getattr(ckpt, "_scale_readers", {})
    for name, _ in list(model.state_dict(keep_vars=True).items()):
        t = ckpt.load(name)
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if t.dtype in FP8_DTYPES and not keep_fp8:
            scale = scale_readers[name]().float() if name in scale_readers else None
            target = dtype or torch.bfloat16
            t = t.to(device=device).to(torch.float32)
            t = (t * scale.to(t.device) if scale is not None else t).to(target)
        elif t.dtype in FP8_DTYPES:
            t = t.to(device=device)
            scale = scale_readers[name]().float() if name in scale_readers else torch.ones(())
            setattr(module, attr + "_scale", scale.to(t.device))
        elif t.is_floating_point() and dtype is not None:
            t = t.to(device=device, dtype=dtype)
        else:
            t = t.to(device=device)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(t, requires_grad=False)
        else:
            module._buffers[attr] = t
    bind_layers(model, RuntimeOptions.from_env().for_device(device or "cpu"))
    return model.eval().requires_grad_(False)
