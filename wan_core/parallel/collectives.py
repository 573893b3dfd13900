"""What the ranks of a run share: guidance passes split over the cfg group, and work done once
on rank 0 (the text encoder, the VAE, CLIP vision) whose result every rank receives."""

from __future__ import annotations

import functools
import io
import pickle
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from .mesh import current
from .sequence import all_gather_single

Pass = Callable[[], torch.Tensor]


def splits_guidance() -> bool:
    """Whether guidance passes run on different ranks (see :func:`guidance_passes`)."""
    mesh = current()
    return mesh is not None and mesh.cfg_group is not None


def guidance_passes(passes: list[Pass]) -> list[torch.Tensor]:
    """``[p() for p in passes]``; with a cfg group and two passes (conditional, unconditional)
    each rank of the group runs one and the outputs (of one shape) are exchanged."""
    if not splits_guidance() or len(passes) != 2:
        return [p() for p in passes]
    mesh = current()
    mine = passes[mesh.cfg_rank]().contiguous()
    both = mine.new_empty(2 * mine.shape[0], *mine.shape[1:])
    all_gather_single(both, mine, group=mesh.cfg_group)
    return list(both.chunk(2))


class RankFailed(RuntimeError):
    """The rank that ran shared work failed; the message carries its error."""


_inside_once = threading.local()


def once(fn: Callable) -> Callable:
    """Decorator: in a parallel run, ``fn`` runs on rank 0 alone and every rank returns its
    result (tensors anywhere in it arrive on this rank's device of the same type); an error
    on rank 0 is raised on every rank. One process, or a call made inside another ``once``
    function (on rank 0 alone): ``fn`` as it is."""
    @functools.wraps(fn)
    def shared(*args, **kwargs):
        if current() is None or getattr(_inside_once, "active", False):
            return fn(*args, **kwargs)
        result = error = None
        if current().is_writer:
            _inside_once.active = True
            try:
                result = fn(*args, **kwargs)
            except Exception as e:  # every rank must hear of it, or they wait forever
                error = e
            finally:
                _inside_once.active = False
        return broadcast_from_writer(result, error)
    return shared


def shared_interrupt(check: Callable[[], None]) -> Callable[[], None]:
    """``check`` (raises to stop the run) as one decision for all ranks: rank 0 runs it and
    every rank stops with it (KeyboardInterrupt on the others). Call the result only where all
    ranks are in step, e.g. once per sampling step. One process: ``check`` itself."""
    if current() is None:
        return check

    def shared() -> None:
        mesh, stop = current(), None
        if mesh.is_writer:
            try:
                check()
            except BaseException as e:  # noqa: B036 (re-raised below, after the others know)
                stop = e
        flag = torch.tensor([stop is not None], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=mesh.monitor_group)
        if stop is not None:
            raise stop
        if flag.item():
            raise KeyboardInterrupt("rank 0 was interrupted")
    return shared


def broadcast_from_writer(value: Any = None, error: BaseException | None = None, *,
                          group: dist.ProcessGroup | None = None) -> Any:
    """Rank 0's ``value`` on every rank (anything picklable; tensors go through the collective
    backend, not pickle), over ``group`` (default: all ranks on the collective backend).
    ``error`` on rank 0 is re-raised there and as :class:`RankFailed` elsewhere."""
    mesh = current()
    tensors: list[torch.Tensor] = []
    header: list[Any] = [None]
    if mesh.is_writer:
        header[0] = ("error", f"{type(error).__name__}: {error}") if error is not None else \
            ("value", _dumps(value, tensors), [(t.shape, t.dtype, t.device.type) for t in tensors])
    comm_device = mesh.device if dist.get_backend(group) != "gloo" else torch.device("cpu")
    dist.broadcast_object_list(header, src=0, group=group, device=comm_device)
    if header[0][0] == "error":
        if error is not None:
            raise error
        raise RankFailed(f"rank 0 failed: {header[0][1]}")
    _, payload, specs = header[0]
    received = []
    for i, (shape, dtype, device_type) in enumerate(specs):
        buffer = tensors[i].to(comm_device) if mesh.is_writer else \
            torch.empty(shape, dtype=dtype, device=comm_device)
        dist.broadcast(buffer, src=0, group=group)
        local = mesh.device if device_type == mesh.device.type else torch.device(device_type)
        received.append(tensors[i] if mesh.is_writer else buffer.to(local))
    return value if mesh.is_writer else _loads(payload, received)


def _dumps(value, tensors: list[torch.Tensor]) -> bytes:
    class TensorsApart(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, torch.Tensor):
                tensors.append(obj.detach().contiguous())
                return len(tensors) - 1
            return None
    buffer = io.BytesIO()
    TensorsApart(buffer).dump(value)
    return buffer.getvalue()


def _loads(payload: bytes, tensors: list[torch.Tensor]):
    class TensorsApart(pickle.Unpickler):
        def persistent_load(self, index):
            return tensors[index]
    return TensorsApart(io.BytesIO(payload)).load()
