"""Benchmark harness shared by the bench scripts (imported as ``harness``: bench/ is on sys.path
when a script runs).

- :func:`use_fresh_caches` before torch is imported: Inductor and Triton compile into empty
  temporary cache folders, so a script's first compile is *cold*; recompiling after
  ``torch._dynamo.reset()`` in the same process then reads those caches: the *warm* first call.
- :func:`settings` lists every setting that changes speed and is not at its default
  (cudnn.benchmark, TF32, matmul precision, channels_last, inductor flags, cache folders, the
  ``TORCH*`` / ``TRITON*`` / ``WANRT*`` / ``CUDA*`` environment) plus what the script names
  (attention backend, tiles), so every number is read with its conditions.
- :func:`first_call` / :func:`timed` time a call; :func:`accuracy` compares outputs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time


def use_fresh_caches() -> str:
    """Point Inductor's and Triton's caches at new empty folders (call before importing torch);
    returns the folder."""
    root = tempfile.mkdtemp(prefix="wanrt-bench-cache-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(root, "triton")
    return root


def settings(*, channels_last: str, **named) -> list[str]:
    """``name: value`` lines: the environment, torch's global switches where not default,
    then ``channels_last`` (what the script lays out so, or why nothing) and ``named`` (the
    script's own choices: attention backend, tiles, ...)."""
    import torch

    lines = [f"torch {torch.__version__}"]
    try:
        import triton
        lines[0] += f", triton {triton.__version__}"
    except ImportError:
        lines[0] += ", triton absent"
    if torch.cuda.is_available():
        lines.append(f"device: {torch.cuda.get_device_name()} (sm{''.join(map(str, torch.cuda.get_device_capability()))}), "
                     f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    defaults = {"cudnn.benchmark": False, "cudnn.deterministic": False,
                "matmul.allow_tf32": False, "cudnn.allow_tf32": True,
                "float32_matmul_precision": "highest"}
    current = {"cudnn.benchmark": torch.backends.cudnn.benchmark,
               "cudnn.deterministic": torch.backends.cudnn.deterministic,
               "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
               "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
               "float32_matmul_precision": torch.get_float32_matmul_precision()}
    changed = [f"{k}={v}" for k, v in current.items() if v != defaults[k]]
    from torch._inductor import config as inductor
    for key, default in (("max_autotune", False), ("max_autotune_gemm", False),
                         ("coordinate_descent_tuning", False), ("epilogue_fusion", True),
                         ("freezing", False), ("triton.cudagraphs", False)):
        value = inductor
        for part in key.split("."):
            value = getattr(value, part, default)
        if value != default:
            changed.append(f"inductor.{key}={value}")
    lines.append("non-default torch settings: " + (", ".join(changed) or "none"))
    lines.append(f"channels_last: {channels_last}")
    env = {k: v for k, v in sorted(os.environ.items())
           if k.startswith(("TORCH", "TRITON", "WANRT", "CUDA", "PYTORCH", "NVIDIA_TF32"))}
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "none"))
    lines += [f"{k}: {v}" for k, v in named.items()]
    return lines


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device) -> None:
    """Release what the last model left: Python garbage, then the CUDA allocator's cache."""
    import gc

    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def first_call(fn, device) -> tuple[float, object]:
    """(seconds, output) of one call of ``fn`` (compiles included)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def timed(fn, runs: int, device, warmup: int = 2) -> tuple[float, str, object]:
    """(median ms, peak, last output) of ``runs`` calls of ``fn`` after ``warmup`` untimed ones
    (cuDNN autotuning, lazy inits). ``peak``: the allocator's peak during the timed calls in GiB
    above what was allocated before them, as text ("–" off CUDA); each output is dropped before
    the next call, so it holds one call's tensors."""
    import torch
    cuda = device.type == "cuda"
    for _ in range(warmup):
        out = fn()
        del out
    sync(device)
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(runs):
        out = None
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    peak = f"{(torch.cuda.max_memory_allocated() - base) / 2**30:.2f}" if cuda else "–"
    return statistics.median(times), peak, out


def accuracy(out, ref) -> tuple[float, float]:
    """(cosine similarity, relative L2 error) of ``out`` against ``ref``, in float64."""
    import torch.nn.functional as F
    a, b = out.double().flatten(), ref.double().flatten()
    return F.cosine_similarity(a, b, dim=0).item(), ((a - b).norm() / b.norm()).item()


class Deadline:
    """Skip what would not finish: ``ok(estimate_s)`` is False once the budget would run out."""

    def __init__(self, budget_s: float):
        self.end = time.perf_counter() + budget_s

    def ok(self, estimate_s: float = 0.0) -> bool:
        return time.perf_counter() + estimate_s < self.end
