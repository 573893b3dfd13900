"""Probe, run in a process without ``TRITON_INTERPRET``: compile the quantisation kernels for
Hopper (sm_90) as their launchers specialise them, on a machine without a GPU (ptxas from
Triton's wheel), and print each build's name and cubin size as JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from sass_profile import build_sm90  # noqa: E402 (clears TRITON_INTERPRET before triton loads)

from wanrt.kernels import triton_kernels as tk  # noqa: E402


def compile_sm90(kernel, signature: dict, constants: dict, num_warps: int) -> int:
    return len(build_sm90(kernel, signature, constants, num_warps=num_warps).asm["cubin"])


HEAD_TILE = {"x_ptr": "*bf16", "stride_xb": "i32", "stride_xl": "i32", "stride_xh": "i32",
             "L": "i32", "H": "i32"}
ROWS = {"out_ptr": "*fp8e4nv", "scale_ptr": "*fp32", "x_ptr": "*bf16", "stride_xm": "i32",
        "K": "i32"}
BUILDS = {
    "fp8 rows, per-row scales": (tk.fp8_quantize_rows_kernel, ROWS,
                                 dict(tensor_scale_ptr=None, BLOCK_K=8192,
                                      EMULATE_FP8_CAST=False), 16),
    "fp8 rows, per-tensor scale": (tk.fp8_quantize_rows_kernel,
                                   {**ROWS, "tensor_scale_ptr": "*fp32"},
                                   dict(BLOCK_K=16384, EMULATE_FP8_CAST=False), 16),
    "V to fp8, transposed": (tk.quantize_v_fp8_kernel,
                             {**HEAD_TILE, "out_ptr": "*fp8e4nv", "scale_ptr": "*fp32",
                              "LP": "i32"},
                             dict(BLOCK=64, D=128, EMULATE_FP8_CAST=False), 4),
    "Q/K to int8": (tk.quantize_int8_kernel,
                    {**HEAD_TILE, "out_ptr": "*i8", "scale_ptr": "*fp32", "mean_ptr": "*fp32",
                     "NB": "i32", "factor": "fp32"},
                    dict(BLOCK=128, D=128), 8),
}

print(json.dumps({name: compile_sm90(*build) for name, build in BUILDS.items()}))
