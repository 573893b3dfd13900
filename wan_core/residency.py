"""Where model weights live: on the compute device while their stage runs, parked otherwise.

One :class:`Residency` per process (the host owns it) decides for every model of a run::

    text encoder, CLIP vision, VAE   on the compute device only while they run (or always on the
                                     CPU, computing there, when listed in ``on_cpu``)
    DiT                              stays on the device between runs; Wan 2.2 A14B: the expert
                                     that is not sampling is parked (``park_experts``)
    low_vram                         the DiT is parked too once sampling is done

Parked weights go to the offload device (the CPU); from a CUDA device they land in pinned memory
with non-blocking copies, so moving them back is a fast DMA. Tensors are moved in place
(``tensor.data = moved``), so modules that share weights (a compiled copy of a loaded model) move
together. ``budget_bytes`` caps what all registered models may hold on the device at once: a
model about to load parks the least recently used idle ones first (the runner's and server's
"one budget"; inside ComfyUI the host's subclass defers to ``comfy.model_management``).

Every stage runs under :meth:`Residency.stage`, which turns an out-of-memory error into a
:class:`StageOutOfMemoryError` naming the stage, the resident models and settings that would fit.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .runtime import RuntimeOptions, bind_layers

# The OOM exception type moved from torch.cuda to torch in 2.5.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# role -> how messages name a model of it unless it is given a label
ROLES = {"text_encoder": "text encoder", "clip_vision": "CLIP vision", "vae": "VAE",
         "dit": "diffusion model"}
GIB = 1 << 30


def module_tensors(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> Iterator[torch.Tensor]:
    """Every tensor ``module`` computes with, once each: parameters, buffers and plain tensor
    attributes (the fp8 ``weight_scale``), outside the submodules ``skip``."""
    skipped = {id(m) for s in skip for m in s.modules()}
    seen = set()
    for m in module.modules():
        if id(m) in skipped:
            continue
        tensors = [*m._parameters.values(), *m._buffers.values(),
                   *(v for v in vars(m).values() if isinstance(v, torch.Tensor))]
        for t in tensors:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                yield t


def copy_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A new copy of ``t`` on ``device``, non-blocking (its strides kept)."""
    return torch.empty_like(t, device=device).copy_(t, non_blocking=True)


_ALIGN = 64  # bytes between tensors in one buffer


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` fills its memory without gaps or overlaps (contiguous or channels-last)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return t.is_contiguous() or (t.dim() in formats and
                                 t.is_contiguous(memory_format=formats[t.dim()]))


def host_copies(tensors: list[torch.Tensor], *, pin: bool = True) -> list[torch.Tensor]:
    """Non-blocking copies of ``tensors`` (strides kept) into one CPU buffer, page-locked with
    ``pin`` (so the way back is an asynchronous DMA). One buffer, not one allocation a tensor:
    torch's page-locked allocator rounds each allocation up to a power of two and keeps freed
    blocks, which made a parked 14B expert hold up to 1.8x its size. (A tensor with gaps in its
    memory gets an allocation of its own.)"""
    dense = [t for t in tensors if _dense(t)]
    sizes = [t.numel() * t.element_size() for t in dense]
    ends = list(itertools.accumulate(-(-n // _ALIGN) * _ALIGN for n in sizes))
    buffer = torch.empty(ends[-1] if ends else 0, dtype=torch.uint8, pin_memory=pin)
    placed = {}
    for t, end, n in zip(dense, [0] + ends, sizes):
        host = buffer[end:end + n].view(t.dtype).as_strided(t.shape, t.stride())
        placed[id(t)] = host.copy_(t, non_blocking=True)
    return [placed[id(t)] if id(t) in placed else
            torch.empty_like(t, device="cpu", pin_memory=pin).copy_(t, non_blocking=True)
            for t in tensors]


def move_module(module: nn.Module, device: torch.device | str,
                skip: tuple[nn.Module, ...] = ()) -> None:
    """Move ``module``'s tensors (outside ``skip``) to ``device`` in place; returns once the
    copies to the CPU have landed (from CUDA: into one page-locked buffer, :func:`host_copies`).
    (Tensors already there are copied too when ``device`` names an index the tensors do not
    show, e.g. ``cpu:1``: tests use it as a second device.)"""
    device = torch.device(device)
    moving = [t for t in module_tensors(module, skip) if t.device != device]
    from_cuda = {t.device for t in moving if t.device.type == "cuda"}
    if device.type == "cpu" and from_cuda:
        copies = host_copies([t.data for t in moving])
    else:
        copies = [copy_to(t.data, device) for t in moving]
    for t, copy in zip(moving, copies):
        t.data = copy
    if device.type == "cpu":
        for source in from_cuda:
            torch.cuda.synchronize(source)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _swapped_blocks(module: nn.Module) -> tuple[nn.Module, ...]:
    """The DiT blocks that block swap keeps off the device (they are moved by it, not by us)."""
    swap = getattr(module, "block_swap", None)
    return swap.swapped(module.blocks) if swap is not None else ()


def device_footprint(module: nn.Module) -> int:
    """Bytes ``module`` needs on its compute device: its tensors outside the block-swapped
    blocks, and the swapped blocks on the device at once (``prefetch + 2`` at most)."""
    swapped = _swapped_blocks(module)
    resident = tensor_bytes(module_tensors(module, swapped))
    if not swapped:
        return resident
    in_flight = min(len(swapped), module.block_swap.prefetch + 2)
    return resident + in_flight * max(tensor_bytes(module_tensors(b)) for b in swapped)


@dataclass
class Entry:
    """A registered model: what it is (role, label), where it is and when it was last used.
    ``members``: every module seen that shares its weights (a LoRA or compiled copy of it)."""

    module: weakref.ref
    role: str
    label: str
    device: torch.device
    last_used: int = 0
    members: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    in_use: int = 0  # stages running it now (``Residency.use``): never parked to make room

    @property
    def model(self) -> nn.Module | None:
        return self.module()


def _indexed(device: torch.device | str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, as tensors report their device."""
    device = torch.device(device)
    if device.type not in ("cpu", "meta") and device.index is None:
        return torch.empty(0, device=device).device
    return device


def _key(module: nn.Module) -> int:
    """Models that share their weights (a compiled copy of a loaded model) are one model."""
    first = next(module_tensors(module), None)
    return id(first) if first is not None else id(module)


class StageOutOfMemoryError(OutOfMemoryError):
    """Out of device memory in one stage; the message names the stage, what was resident and
    settings that would fit."""


class Residency:
    """The placement policy of every model of a process (see the module docstring).

    ``device``: where models compute; ``offload_device``: where they are parked (CPU).
    ``on_cpu``: roles that stay on the offload device and compute there (e.g. the text encoder).
    ``low_vram``: park the DiT as well when sampling ends. ``park_experts``: only one A14B expert
    on the device at a time. ``budget_bytes``: the most all models may hold on the device.
    Where each registered model is, is tracked here (``moves`` logs every move).
    """

    def __init__(self, device: torch.device | str, offload_device: torch.device | str = "cpu", *,
                 on_cpu: tuple[str, ...] = (), low_vram: bool = False,
                 park_experts: bool = True, budget_bytes: int | None = None):
        unknown = set(on_cpu) - set(ROLES)
        if unknown:
            raise ValueError(f"on_cpu: unknown roles {sorted(unknown)}; roles are {list(ROLES)}")
        self.device, self.offload_device = _indexed(device), _indexed(offload_device)
        self.on_cpu, self.low_vram = tuple(on_cpu), low_vram
        self.park_experts, self.budget_bytes = park_experts, budget_bytes
        self._entries: dict[int, Entry] = {}
        self._clock = 0
        self.moves: list[tuple[str, str, str]] = []  # (load | park, label, device)

    # -- bookkeeping ------------------------------------------------------------------------
    def register(self, module: nn.Module, role: str, label: str | None = None) -> nn.Module:
        """Track ``module`` (a model of ``role``): an encoder or VAE (or, in low_vram mode, a
        DiT) is parked now; a DiT stays where it is until it is first used. A model held on one
        device to compute on another (a DiT loaded to the CPU for the GPU, a role in ``on_cpu``)
        has its layers bound for the device it computes on."""
        entry = self._entry(module, role, label)
        compute = self.compute_device(entry.role)
        if entry.role in self.on_cpu or entry.device != compute:
            bind_layers(module, RuntimeOptions.from_env().for_device(compute))
        if not self.keeps_idle(entry.role):
            self.park(module)
        return module

    def _entry(self, module: nn.Module, role: str | None = None, label: str | None = None) -> Entry:
        self._entries = {k: e for k, e in self._entries.items() if e.model is not None}
        key = _key(module)
        entry = self._entries.get(key)
        if entry is None:
            if role not in ROLES:
                raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
            first = next(module_tensors(module), None)
            here = self.device if first is None or first.device == self.device else (
                self.offload_device)
            entry = self._entries[key] = Entry(weakref.ref(module), role, label or ROLES[role],
                                                here)
        elif label is not None:
            entry.label = label
        entry.members.add(module)
        return entry

    def compute_device(self, role: str) -> torch.device:
        """Where a model of ``role`` runs."""
        return self.offload_device if role in self.on_cpu else self.device

    def keeps_idle(self, role: str) -> bool:
        """Whether a model of ``role`` stays on the device between its stages."""
        return role == "dit" and not self.low_vram

    def where(self, module: nn.Module) -> str:
        """``"device"`` or ``"offload"``: where a registered model is."""
        return "device" if self._entry(module).device == self.device else "offload"

    def device_bytes(self, module: nn.Module) -> int:
        """Bytes ``module`` holds on the compute device (block-swapped blocks not counted)."""
        if self._entry(module).device != self.device:
            return 0
        return tensor_bytes(module_tensors(module, _swapped_blocks(module)))

    def resident(self) -> list[tuple[str, int]]:
        """``(label, bytes)`` of every registered model on the compute device."""
        return [(e.label, size) for e in self._entries.values()
                if e.model is not None and (size := self.device_bytes(e.model))]

    # -- moves ------------------------------------------------------------------------------
    def load(self, module: nn.Module, role: str | None = None, label: str | None = None) -> None:
        """Put ``module`` on its compute device, first parking what the policy says must make
        room (the other A14B expert, least recently used models beyond the budget)."""
        entry = self._entry(module, role, label)
        self._clock += 1
        entry.last_used = self._clock
        target = self.compute_device(entry.role)
        tensors = module_tensors(module, _swapped_blocks(module))
        # A copy of a model already there (its LoRA-merged weights) may still have its own
        # tensors elsewhere; only the module asked for moves (not the base's unpatched weights).
        missing = tensor_bytes(tensors if entry.device != target else
                               (t for t in tensors if t.device != target))
        if target == self.device:
            self.make_room(entry, missing)
        if missing:
            self._move(entry, target, "load", (module,))

    def make_room(self, entry: Entry, needed: int) -> None:
        """Park models so that ``needed`` more bytes fit for ``entry``: the other DiT when
        ``park_experts``, then idle models (oldest use first) while over ``budget_bytes``.
        A model a running stage uses (the VAE while CLIP loads for the same image encode) stays."""
        others = [e for e in self._entries.values()
                  if e is not entry and e.model is not None and not e.in_use]
        if self.park_experts and entry.role == "dit":
            for other in others:
                if other.role == "dit":
                    self.park(other.model)
        if self.budget_bytes is None:
            return
        used = sum(size for _, size in self.resident())
        for other in sorted(others, key=lambda e: e.last_used):
            if used + needed <= self.budget_bytes:
                break
            if (size := self.device_bytes(other.model)):
                self.park(other.model)
                used -= size

    def park(self, module: nn.Module) -> None:
        """Move ``module``, and every model sharing its weights, to the offload device (pinned
        CPU memory from CUDA)."""
        entry = self._entry(module)
        if entry.device != self.offload_device:
            self._move(entry, self.offload_device, "park")

    def _move(self, entry: Entry, device: torch.device, what: str,
              modules: tuple[nn.Module, ...] | None = None) -> None:
        """Move ``modules`` (default: every member of ``entry``) to ``device``: all or nothing
        (after an error, an out-of-memory half way, what moved goes back)."""
        modules = modules if modules is not None else tuple(entry.members)
        try:
            for module in modules:
                move_module(module, device, _swapped_blocks(module))
        except BaseException:
            for module in modules:
                move_module(module, entry.device, _swapped_blocks(module))
            raise
        entry.device = device
        self.moves.append((what, entry.label, str(device)))

    def release(self, module: nn.Module) -> None:
        """``module``'s stage is over: park it unless its role stays on the device (models never
        loaded through this policy are left alone)."""
        entry = self._entries.get(_key(module))
        if entry is not None and not self.keeps_idle(entry.role):
            self.park(module)

    @contextlib.contextmanager
    def use(self, module: nn.Module, role: str, stage: str, label: str | None = None):
        """Run ``stage`` with ``module`` on its compute device; released afterwards (after an
        out-of-memory error is named, so that the message lists ``module`` as resident)."""
        with contextlib.ExitStack() as after:
            after.callback(self.release, module)
            after.enter_context(self.stage(stage))
            self.load(module, role, label)
            entry = self._entry(module)
            entry.in_use += 1
            try:
                yield module
            finally:
                entry.in_use -= 1

    # -- errors -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str):
        """Re-raise an out-of-memory error inside as :class:`StageOutOfMemoryError`."""
        try:
            yield
        except StageOutOfMemoryError:
            raise
        except OutOfMemoryError as e:
            raise StageOutOfMemoryError(self.oom_message(name, e)) from e

    def oom_message(self, stage: str, error: BaseException) -> str:
        resident = self.resident()
        listed = ", ".join(f"{label} {size / GIB:.2f} GiB" for label, size in resident) or "none"
        lines = [f"out of memory on {self.device} during {stage}. WanRT models resident there: "
                 f"{listed}. Settings that would fit:"]
        lines += [f"  - {tip}" for tip in self.suggestions(stage, error)]
        return "\n".join(lines)

    def suggestions(self, stage: str, error: BaseException) -> list[str]:
        """Settings that lower the peak of ``stage`` (node inputs and command-line flags named)."""
        tips = []
        dits = sorted((e for e in self._entries.values() if e.role == "dit"
                       and e.model is not None and hasattr(e.model, "blocks")),
                      key=lambda e: e.device != self.device)  # the resident one first
        if "sampl" in stage and dits:
            tip = self._block_swap_tip(dits[0].model, error)
            tips += [tip] if tip else []
        if "decod" in stage:
            tips.append("tiled VAE decode (the 'tiled' input of WanRT VAE Decode, tiled=True "
                        "in Python)")
        elif "encod" in stage and "text" not in stage:
            tips.append("tiled VAE encode (vae.encode(..., tiled=True) in Python)")
        if "text" in stage and "text_encoder" not in self.on_cpu:
            tips.append("run the text encoder on the CPU (flag --text-encoder-on-cpu of wanrt "
                        "run / serve, on_cpu=('text_encoder',) in Python)")
        if not self.low_vram:
            tips.append("low_vram mode: park the diffusion model when sampling ends, so the "
                        "encoders and the VAE get the whole device (flag --low-vram of wanrt "
                        "run / serve)")
        tips.append("a smaller size or fewer frames; fp8_e4m3fn weights (half the memory)")
        return tips

    @staticmethod
    def _block_swap_tip(dit: nn.Module, error: BaseException) -> str | None:
        """``blocks_to_swap`` that frees what the failed allocation asked for (at least 5 more
        blocks), or None when every block is swapped already."""
        blocks = len(dit.blocks)
        swap = getattr(dit, "block_swap", None)
        swapped = swap.blocks_to_swap if swap is not None else 0
        if swapped == blocks:
            return None
        per_block = max(tensor_bytes(module_tensors(dit.blocks[0])), 1)
        asked = re.search(r"Tried to allocate ([\d.]+) ([KMG])iB", str(error))
        short = (float(asked.group(1)) * {"K": 1 << 10, "M": 1 << 20, "G": GIB}[asked.group(2)]
                 if asked else 0)
        n = min(blocks, swapped + max(5, math.ceil(short / per_block)))
        return (f"block swap: blocks_to_swap={n} of {blocks} (the 'blocks_to_swap' input of "
                f"WanRT Load Diffusion Model; {per_block / GIB:.2f} GiB per block, {swapped} "
                f"swapped now)")
