"""Block swap: the last N transformer blocks of a Wan DiT live on the CPU and are copied to the
compute device just ahead of their turn.

Copies run on a side CUDA stream ``prefetch`` blocks ahead, so they overlap the compute of the
blocks before; the compute stream waits on an event before a block runs, and the device copy is
freed once the block is done (the caching allocator reuses it for the next one). About
``prefetch + 2`` swapped blocks are on the device at once (the CPU, running ahead of the GPU,
waits for a block's compute before it copies far beyond it). The weights themselves never change:
the output is bit-identical to running without swapping.

The swap happens between blocks (in :meth:`WanModel.forward`'s loop), outside any compiled
region: a block's tensors keep their device, dtype, shape and strides while it runs, so a
regionally compiled block (``compile_dit(mode="blocks")``) sees no new guard. Whole-model
compile (``"full"``) would trace the swap and is refused.

On devices without streams (the CPU in tests) copies are made synchronously, the same logic.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .residency import copy_to, host_copies, module_tensors, move_module


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


class _Copy:
    """Device copies of one block's tensors, in flight on the side stream (CUDA) or done."""

    def __init__(self, tensors: list[torch.Tensor], device: torch.device):
        self.device = device
        if device.type == "cuda":
            stream = _side_stream(device)
            with torch.cuda.stream(stream):  # sources: page-locked, never written
                self.copies = [copy_to(t.data, device) for t in tensors]
                self.ready = torch.cuda.Event()
                self.ready.record(stream)
        else:
            self.copies = [copy_to(t.data, device) for t in tensors]
            self.ready = None

    def wait(self) -> list[torch.Tensor]:
        """The copies, usable on the current stream (which waits for them)."""
        if self.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(self.ready)
            for t in self.copies:
                t.record_stream(current)  # freed only after the compute that reads it
        return self.copies


@dataclass
class BlockSwap:
    """Keep the last ``blocks_to_swap`` blocks off ``device``; copy ``prefetch`` ahead (≥ 0;
    0 copies each block when its turn comes)."""

    blocks_to_swap: int
    device: torch.device
    prefetch: int = 1
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # when a list: (block, blocks being prefetched) as each swapped block runs (tests)
    log: list[tuple[int, tuple[int, ...]]] | None = None

    def swapped(self, blocks: nn.ModuleList) -> tuple[nn.Module, ...]:
        return tuple(blocks[len(blocks) - self.blocks_to_swap:]) if self.blocks_to_swap else ()

    def __call__(self, blocks: nn.ModuleList, start: int = 0, stop: int | None = None) -> Iterator[nn.Module]:
        """``blocks[start:stop]`` in order, each swapped one on the device while the caller runs it."""
        stop = len(blocks) if stop is None else stop
        first = len(blocks) - self.blocks_to_swap
        queue = iter(range(max(first, start), stop))
        in_flight: dict[int, _Copy] = {}
        # CUDA: one event per released block, set when its compute is done. The CPU runs ahead
        # of the GPU; a released copy is only freed when its compute is, so before copying more
        # the CPU waits for all but the last released block to be done: at most prefetch + 2
        # swapped blocks hold device memory.
        released: deque[torch.cuda.Event] = deque()

        def fetch_next():
            i = next(queue, None)
            if i is not None:
                while len(released) > 1:
                    released.popleft().synchronize()
                in_flight[i] = _Copy(list(module_tensors(blocks[i])), self.device)

        for _ in range(self.prefetch):
            fetch_next()
        for i in range(start, stop):
            block = blocks[i]
            if i < first:
                yield block
                continue
            if i not in in_flight:  # prefetch 0
                fetch_next()
            tensors = list(module_tensors(block))
            parked = [t.data for t in tensors]
            for t, copy in zip(tensors, in_flight.pop(i).wait()):
                t.data = copy
            if self.prefetch:
                fetch_next()
            try:
                if self.log is not None:
                    self.log.append((i, tuple(in_flight)))
                yield block
            finally:
                for t, host in zip(tensors, parked):
                    t.data = host
                if self.device.type == "cuda":
                    released.append(torch.cuda.current_stream(self.device).record_event())


def enable_block_swap(model: nn.Module, blocks_to_swap: int, *, device: torch.device | str,
                      prefetch: int = 1) -> nn.Module:
    """Swap the last ``blocks_to_swap`` blocks of ``model`` (a WanModel) through ``device``;
    0 turns swapping off. The swapped blocks move to the CPU now (pinned memory when ``device``
    is CUDA); blocks swapped before and not any more join the rest of the model."""
    blocks = len(model.blocks)
    if not 0 <= blocks_to_swap <= blocks:
        raise ValueError(f"blocks_to_swap must be between 0 and {blocks} (the model's blocks), "
                         f"got {blocks_to_swap}")
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}")
    if getattr(model, "_compiled_call_impl", None) is not None:
        raise ValueError("block swap cannot run inside a whole-model compile (mode 'full'); use "
                         "compile mode 'blocks', or enable block swap before compiling")
    before = model.block_swap.swapped(model.blocks) if model.block_swap is not None else ()
    swap = BlockSwap(blocks_to_swap, torch.device(device), prefetch) if blocks_to_swap else None
    model.block_swap = swap
    home = next(module_tensors(model.patch_embedding)).device  # where the unswapped part is
    for block in before:
        if swap is None or block not in swap.swapped(model.blocks):
            move_module(block, home)
    if swap is None:
        return model
    for block in swap.swapped(model.blocks):
        move_module(block, swap.offload_device)
        unpinned = [t for t in module_tensors(block) if not t.is_pinned()]
        if swap.device.type == "cuda" and unpinned:  # asynchronous copies need pinned sources
            for t, pinned in zip(unpinned, host_copies([t.data for t in unpinned])):
                t.data = pinned
    return model
