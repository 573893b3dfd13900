"""Timing helper shared by the bench scripts (imported as ``timing``: bench/ is on sys.path when a
script runs)."""

from __future__ import annotations

import statistics
import time

import torch


def timed(fn, iters: int, device: torch.device, warmup: int = 2) -> tuple[float, str, torch.Tensor]:
    """(median ms, peak GiB above what was allocated before as text, last output) of ``fn()``.

    ``warmup`` untimed calls first (cuDNN autotuning, lazy inits); each output is dropped before
    the next call, so the peak holds one call's tensors."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        out = fn()
        del out
    sync()
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        out = None
        start = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**30:.2f}" if cuda else "–"
    return statistics.median(times), peak, out
