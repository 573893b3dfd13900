"""The process layout of a multi-GPU run: which ranks split the guidance passes and which split
the token sequence, on ``torch.distributed`` as ``torchrun`` starts it.

``--parallel`` names the layout:

- ``cfg``: the conditional and unconditional passes of classifier-free guidance on two ranks;
- ``ulysses``: every rank holds ``1/N`` of the video tokens; attention exchanges heads for tokens
  (all-to-all), so ``N`` must divide the head count;
- ``ring``: every rank holds ``1/N`` of the tokens; key/value shards travel round the ranks and
  the partial attentions merge by their log-sum-exp (any ``N``);
- ``cfg+ulysses``, ``cfg+ring``: both, ``2 × N/2`` ranks.

Ranks ``[c·S, (c+1)·S)`` form the sequence group of guidance pass ``c`` (``S`` = sequence degree),
so a sequence group sits on neighbouring GPUs.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re

import torch
import torch.distributed as dist

from ... import kernels
from .sequence import SequenceParallel

SEQUENCE_MODES = ("ulysses", "ring")
MODES = ("cfg", *SEQUENCE_MODES, *(f"cfg+{m}" for m in SEQUENCE_MODES))


class ParallelConfigError(ValueError):
    """A parallel layout that cannot run: unknown mode, a world size that does not fit it."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """A parsed ``--parallel`` mode for ``world_size`` ranks."""

    mode: str
    world_size: int
    cfg: int  # 1 or 2 ranks sharing the guidance passes
    sequence: int  # ranks sharing the tokens of one pass
    attention: str | None  # "ulysses" | "ring" | None (no sequence split)

    @classmethod
    def parse(cls, mode: str, world_size: int) -> Layout:
        if mode not in MODES:
            raise ParallelConfigError(f"--parallel {mode!r} is not a parallel mode; "
                                      f"choose one of {', '.join(MODES)}")
        cfg = 2 if mode.startswith("cfg") else 1
        attention = next((m for m in SEQUENCE_MODES if mode.endswith(m)), None)
        if mode == "cfg" and world_size != 2:
            raise ParallelConfigError(f"--parallel cfg runs on 2 processes, not {world_size}; "
                                      f"for more, use cfg+ulysses or cfg+ring")
        if world_size % cfg or world_size < 2:
            raise ParallelConfigError(f"--parallel {mode} needs an even number of processes "
                                      f"(at least 2), not {world_size}")
        return cls(mode, world_size, cfg, world_size // cfg, attention)

    def check_heads(self, num_heads: int) -> None:
        """ParallelConfigError where Ulysses cannot split ``num_heads`` over the sequence ranks."""
        if self.attention == "ulysses" and num_heads % self.sequence:
            ring = self.mode.replace("ulysses", "ring")
            raise ParallelConfigError(
                f"--parallel {self.mode}: Ulysses splits the {num_heads} attention heads over "
                f"{self.sequence} ranks, and {self.sequence} does not divide {num_heads}; use a "
                f"degree that does ({_divisors(num_heads)}) or --parallel {ring}")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(2, n + 1) if n % d == 0)


@dataclasses.dataclass(frozen=True)
class Mesh:
    """The groups of this rank: ``cfg_group`` (the ranks of the same tokens across guidance
    passes) and ``sequence_parallel`` (the ranks sharing one pass's tokens, with their
    attention); None where that split is 1."""

    layout: Layout
    rank: int
    cfg_rank: int
    sequence_rank: int
    cfg_group: dist.ProcessGroup | None
    sequence_parallel: SequenceParallel | None
    device: torch.device
    monitor_group: dist.ProcessGroup  # gloo, every rank: finds the ranks that stopped answering
    # gloo, every rank, no practical timeout: rank 0 hands out work that may be long in coming
    # (a server's next prompt)
    announce_group: dist.ProcessGroup

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


_current: Mesh | None = None


def current() -> Mesh | None:
    """The mesh :func:`init` made in this process, or None (one process)."""
    return _current


def is_writer() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return _current is None or _current.is_writer


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(mode: str, *, timeout_s: float = 600.0) -> Mesh:
    """Join the process group ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...), on the platform's collective backend
    (NCCL / RCCL, HCCL, XCCL, gloo on CPU), bind this process to its local device and build the
    groups of ``mode``. A collective that waits longer than ``timeout_s`` fails (a rank that
    died or hangs). NCCL's own environment variables apply; NVLink multicast stays off unless
    ``NCCL_NVLS_ENABLE`` says otherwise."""
    global _current
    if not launched_by_torchrun():
        raise ParallelConfigError(f"--parallel {mode} runs under torchrun: torchrun "
                                  f"--nproc-per-node N -m wanrt run ... --parallel {mode}")
    layout = Layout.parse(mode, int(os.environ["WORLD_SIZE"]))
    platform = kernels.current_platform()
    device = platform.device(int(os.environ["LOCAL_RANK"])) if platform.name != "cpu" \
        else torch.device("cpu")
    if device.type != "cpu":
        torch.get_device_module(device.type).set_device(device)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(platform.distributed_backend, timeout=timeout,
                                device_id=device if device.type != "cpu" else None)
    rank = dist.get_rank()
    cfg_rank, sequence_rank = divmod(rank, layout.sequence)
    cfg_group = sequence_parallel = None
    # Every rank creates every group (new_group is collective), keeping its own.
    for c in range(layout.cfg):
        ranks = list(range(c * layout.sequence, (c + 1) * layout.sequence))
        group = dist.new_group(ranks, timeout=timeout) if layout.sequence > 1 else None
        if c == cfg_rank and group is not None:
            sequence_parallel = SequenceParallel(group, layout.attention, device)
    for s in range(layout.sequence):
        ranks = list(range(s, layout.world_size, layout.sequence))
        group = dist.new_group(ranks, timeout=timeout) if layout.cfg > 1 else None
        if s == sequence_rank:
            cfg_group = group
    monitor = dist.new_group(backend="gloo", timeout=timeout)
    announce = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=365))
    _current = Mesh(layout, rank, cfg_rank, sequence_rank, cfg_group, sequence_parallel, device,
                    monitor, announce)
    return _current


def unresponsive_ranks(timeout_s: float = 10.0) -> str | None:
    """After a failure in a parallel run, every rank calls this: a sentence naming the ranks
    that did not reach this point within ``timeout_s`` (hung or died), or None where all did
    (the failure was the same everywhere)."""
    try:
        dist.monitored_barrier(current().monitor_group,
                               timeout=datetime.timedelta(seconds=timeout_s), wait_all_ranks=True)
        return None
    except RuntimeError as e:
        found = re.search(r"[Rr]anks? ([\d, ]+) failed", str(e))
        if found:
            ranks = [int(r) for r in re.findall(r"\d+", found.group(1))]
            which = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
            return f"{which} stopped answering (hung or died): not back within {timeout_s:g} s"
        return f"rank 0 stopped answering (hung or died): {str(e).splitlines()[0]}"


def shutdown() -> None:
    """Leave the process group (the end of a run)."""
    global _current
    _current = None
    if dist.is_initialized():
        dist.destroy_process_group()
