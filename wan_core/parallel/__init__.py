"""Several processes on one video: guidance passes and token shards over ``torch.distributed``
(see :mod:`.mesh` for the layouts, :mod:`.sequence` for the sharded attention,
:mod:`.collectives` for what runs once and is shared)."""

from .collectives import (RankFailed, broadcast_from_writer, guidance_passes, once,
                          shared_interrupt, splits_guidance)
from .mesh import (MODES, Layout, Mesh, ParallelConfigError, current, init, is_writer,
                   launched_by_torchrun, shutdown, unresponsive_ranks)
from .sequence import SequenceParallel

__all__ = ["MODES", "Layout", "Mesh", "ParallelConfigError", "RankFailed", "SequenceParallel",
           "broadcast_from_writer", "current", "guidance_passes", "init", "is_writer",
           "launched_by_torchrun", "once", "shared_interrupt", "shutdown", "splits_guidance",
           "unresponsive_ranks"]
