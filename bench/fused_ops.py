"""Fused-kernel bandwidth: Triton vs the torch fallback vs ``torch.compile`` of the fallback.

    python bench/fused_ops.py            # Wan shapes on the GPU (B=1, L=32760, C=1536 / 5120)
    python bench/fused_ops.py --tiny     # small shapes on CPU, torch paths only (smoke test)

Bytes moved per op = every input tensor read once + every output written once, at their real
sizes (bf16 activations; fp32 modulation: [B,1,C] rows are negligible, per-token [B,L,C] rows
are not; cos/sin tables [L, D/2] fp32). GB/s = bytes / median time. "% copy" compares with
``dst.copy_(src)`` of a 1 GiB bf16 tensor (read + write) measured in the same run. The goal is
>= 80% of copy bandwidth, and no slower than the compiled fallback.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch

from wanrt import kernels
from wanrt.kernels import torch_ops

OPS = ("norm_modulate", "gated_residual_norm_modulate", "gated_residual", "rms_norm",
       "rotary_embedding")
HEAD_DIM = 128


def time_us(fn, device: torch.device) -> float:
    """Median time of ``fn()`` in µs (CUDA: triton's do_bench with warm-up and L2 flush)."""
    if device.type == "cuda":
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3
    fn()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def copy_bandwidth(device: torch.device, numel: int) -> float:
    """Device copy bandwidth in GB/s (read + write of ``numel`` bf16 values)."""
    src = torch.randn(numel, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / time_us(lambda: dst.copy_(src), device) / 1e3


def op_args(op: str, seq: int, dim: int, layout: str, device) -> tuple:
    """Arguments of ``op`` for ``x: [1, seq, dim]`` bf16 with fp32 modulation in ``layout``."""
    def act():
        return torch.randn(1, seq, dim, device=device, dtype=torch.bfloat16)

    def mod():
        return torch.randn(1, 1 if layout == "[B,1,C]" else seq, dim, device=device)

    if op == "norm_modulate":
        return act(), mod(), mod()
    if op == "gated_residual_norm_modulate":
        return act(), act(), mod(), mod(), mod()
    if op == "gated_residual":
        return act(), act(), mod()
    if op == "rms_norm":
        return act(), torch.randn(dim, device=device, dtype=torch.bfloat16)
    angles = torch.rand(seq, HEAD_DIM // 2, device=device) * 100
    return act().unflatten(-1, (-1, HEAD_DIM)), angles.cos(), angles.sin()


def nbytes(tensors) -> int:
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small CPU shapes, torch paths only")
    parser.add_argument("--seq", type=int, default=32760, help="tokens L (480p x 81 frames)")
    args = parser.parse_args()

    if args.tiny:
        device, seq, dims, copy_numel = torch.device("cpu"), 256, (128, 384), 1 << 24
        impls = ("torch", "compiled")
    else:
        device, seq, dims, copy_numel = torch.device("cuda"), args.seq, (1536, 5120), 1 << 29
        impls = ("triton", "torch", "compiled")
    cases = [(op, dim, "[B,1,C]") for dim in dims for op in OPS]
    cases.append(("gated_residual_norm_modulate", 3072, "[B,L,C]"))  # Wan 2.2 TI2V-5B

    copy_gbs = copy_bandwidth(device, copy_numel)
    compiled = {op: torch.compile(getattr(torch_ops, op), dynamic=False) for op in OPS}
    rows = []
    with torch.no_grad():
        for op, dim, layout in cases:
            inputs = op_args(op, seq, dim, layout, device)
            run = {"triton": lambda: getattr(kernels, op)(*inputs, impl="triton"),
                   "torch": lambda: getattr(kernels, op)(*inputs, impl="torch"),
                   "compiled": lambda: compiled[op](*inputs)}
            outputs = {impl: run[impl]() for impl in impls}
            moved = nbytes(inputs) + nbytes(outputs["torch"] if isinstance(outputs["torch"], tuple)
                                             else (outputs["torch"],))
            us = {impl: time_us(run[impl], device) for impl in impls}
            cells = [f"{t:,.1f} µs · {moved / t / 1e3:,.0f} GB/s · "
                     f"{100 * moved / t / 1e3 / copy_gbs:.0f}%" for t in us.values()]
            if "triton" in us:
                cells.append(f"{us['compiled'] / us['triton']:.2f}x")
            first = {impl: out[0] if isinstance(out, tuple) else out for impl, out in outputs.items()}
            diff = max((first[i].float() - first["torch"].float()).abs().max().item() for i in impls)
            rows.append(f"| {op} | {dim} | {layout} | {moved / 1e6:,.1f} | " + " | ".join(cells)
                        + f" | {diff:.2g} |")

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    print(f"{datetime.date.today()} · {name} · torch {torch.__version__} · triton {triton_version}"
          f" · B=1, L={seq}, bf16 x, fp32 modulation · copy {copy_gbs:,.0f} GB/s\n")
    columns = [*impls, "compiled / triton time"] if "triton" in impls else list(impls)
    print("| op | C | modulation | MB moved | " + " | ".join(columns) + " | max abs diff |")
    print("|---|---|---|---|" + "---|" * len(columns) + "---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
