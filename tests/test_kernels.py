"""Every fused kernel: Triton (interpreted on CPU) vs its torch fallback vs a float64 reference.

The references below are the plain formulas in float64, written independently of
``kernels.torch_ops``; inputs are drawn in the test dtype, so the reference sees exactly the same
numbers. Tolerances (``|actual - expected| <= atol + rtol * |expected|``) per output dtype:

- fp32: LayerNorm / RMSNorm statistics over <= 5120 fp32 values carry ~1e-6 relative error.
- fp16: rounding the fp32 result to nearest costs <= 2^-11 relative; 2^-10 leaves room for the
  fp32 math.
- bf16: one ulp, <= 2^-7 relative: the Triton interpreter rounds fp32 -> bf16 toward zero
  (torch and GPUs round to nearest, <= 2^-8).
- atol covers outputs near zero, where the fp32 error of the O(10) terms is absolute (~1e-6).
"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from wanrt import kernels
from wanrt.kernels import triton_kernels, triton_ops

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.float16: dict(rtol=2**-10, atol=1e-4),
       torch.bfloat16: dict(rtol=2**-7, atol=1e-4)}
DTYPES = list(TOL)
SHAPES = [(2, 6, 1536), (1, 9, 1000), (2, 6, 257)]  # [B, L, C]; L divisible by F = 3
LAYOUTS = ["sample", "frame", "token"]  # [B,1,C], [B,F,1,C], [B,L,C]
FRAMES = 3
EPS = 1e-6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def modulation(layout, b, seq, c, dtype=torch.float32):
    """A random shift/scale/gate in one of the three layouts (fp32, as Wan computes them)."""
    shape = {"sample": (b, 1, c), "frame": (b, FRAMES, 1, c), "token": (b, seq, c)}[layout]
    return torch.randn(shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# float64 references

def per_token(t, seq):
    """``[B,1,C]`` / ``[B,F,1,C]`` / ``[B,L,C]`` -> ``[B,L,C]`` float64 (None stays None)."""
    if t is None:
        return None
    t = t.double()
    if t.dim() == 4:
        return t.squeeze(2).repeat_interleave(seq // t.shape[1], dim=1)
    return t.expand(-1, seq, -1)


def ref_layer_norm(x, weight=None, bias=None):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + EPS)
    if weight is not None:
        y = y * weight.double()
    if bias is not None:
        y = y + bias.double()
    return y


def ref_modulate(y, shift, scale):
    if scale is not None:
        y = y * (1 + per_token(scale, y.shape[1]))
    if shift is not None:
        y = y + per_token(shift, y.shape[1])
    return y


def ref_residual(residual, x, gate):
    update = x.double() if gate is None else x.double() * per_token(gate, x.shape[1])
    return residual.double() + update


def ref_rms_norm(x, weight):
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * weight.double()


def ref_rotary(x, cos, sin):
    """Multiply each pair (x[2j], x[2j+1]) as a complex number by cos + i sin."""
    pairs = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    rot = torch.complex(cos.double(), sin.double()).unsqueeze(-2)  # broadcast over heads
    return torch.view_as_real(pairs * rot).flatten(-2)


def check(run, expected):
    """``run(impl)`` returns a tuple of outputs. For both impls each output has the expected dtype
    and matches its float64 reference; and the Triton outputs match the torch ones."""
    results = {impl: run(impl) for impl in ("triton", "torch")}
    for impl, outs in results.items():
        for out, (ref, dtype) in zip(outs, expected, strict=True):
            assert out.dtype == dtype, f"{impl}: {out.dtype} != {dtype}"
            torch.testing.assert_close(out.double(), ref, **TOL[dtype],
                                       msg=lambda m, impl=impl: f"{impl} vs float64: {m}")
    for a, b in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(a.double(), b.double(), **TOL[a.dtype])


def activations(shape, dtype):
    """Random x with a nonzero mean, so LayerNorm's centring matters."""
    return (torch.randn(shape) * 3 + 1).to(dtype)


# ---------------------------------------------------------------------------------------------
# All layouts x dtypes x hidden sizes (incl. 1536 and non-powers of two)

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_norm_modulate(shape, layout, dtype):
    x = activations(shape, dtype)
    shift, scale = modulation(layout, *shape), modulation(layout, *shape)
    expected = ref_modulate(ref_layer_norm(x.double()), shift, scale)
    check(lambda impl: (kernels.norm_modulate(x, shift, scale, eps=EPS, impl=impl),),
          [(expected, dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gated_residual_norm_modulate(shape, layout, dtype):
    residual, x = activations(shape, dtype), activations(shape, dtype)
    gate, shift, scale = (modulation(layout, *shape) for _ in range(3))
    r = ref_residual(residual, x, gate)
    check(lambda impl: kernels.gated_residual_norm_modulate(residual, x, gate, shift, scale,
                                                            eps=EPS, impl=impl),
          [(ref_modulate(ref_layer_norm(r), shift, scale), dtype), (r, dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gated_residual(shape, layout, dtype):
    residual, x = activations(shape, dtype), activations(shape, dtype)
    gate = modulation(layout, *shape)
    check(lambda impl: (kernels.gated_residual(residual, x, gate, impl=impl),),
          [(ref_residual(residual, x, gate), dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 6, 1536), (1, 5, 5120), (2, 3, 1000), (1, 4, 257)])
def test_rms_norm(shape, dtype):
    x, weight = activations(shape, dtype), torch.randn(shape[-1], dtype=dtype)
    check(lambda impl: (kernels.rms_norm(x, weight, eps=EPS, impl=impl),),
          [(ref_rms_norm(x, weight), dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched_table", [False, True], ids=["cos[L,D/2]", "cos[B,L,D/2]"])
@pytest.mark.parametrize("shape", [(2, 2, 3, 128), (1, 6, 4, 12), (1, 2, 40, 16)])  # [B,L,H,D]
def test_rotary_embedding(shape, batched_table, dtype):
    b, seq, _, d = shape
    x = torch.randn(shape).to(dtype)
    angles = torch.rand((b, seq, d // 2) if batched_table else (seq, d // 2)) * 100
    cos, sin = angles.cos(), angles.sin()
    check(lambda impl: (kernels.rotary_embedding(x, cos, sin, impl=impl),),
          [(ref_rotary(x, cos, sin), dtype)])


# ---------------------------------------------------------------------------------------------
# Optional arguments, mixed dtypes

@pytest.mark.parametrize("shift_on, scale_on, weight_on, bias_on",
                         [(0, 0, 0, 0), (1, 0, 1, 1), (0, 1, 1, 0), (1, 1, 0, 1)])
def test_norm_modulate_optional_arguments(shift_on, scale_on, weight_on, bias_on):
    """None shift/scale mean 0; the LayerNorm is affine only in what is given. Modulation in
    x's dtype (bf16) here rather than fp32."""
    b, seq, c = 2, 6, 96
    x = activations((b, seq, c), torch.bfloat16)
    shift = modulation("frame", b, seq, c, torch.bfloat16) if shift_on else None
    scale = modulation("sample", b, seq, c, torch.bfloat16) if scale_on else None
    weight = torch.randn(c) if weight_on else None
    bias = torch.randn(c) if bias_on else None
    expected = ref_modulate(ref_layer_norm(x.double(), weight, bias), shift, scale)
    check(lambda impl: (kernels.norm_modulate(x, shift, scale, eps=EPS, weight=weight, bias=bias,
                                              impl=impl),),
          [(expected, torch.bfloat16)])


@pytest.mark.parametrize("gate_on, shift_on, scale_on, affine", [
    (0, 0, 0, False), (0, 1, 1, True), (1, 0, 1, False), (1, 1, 0, True)])
def test_gated_residual_norm_modulate_optional_arguments(gate_on, shift_on, scale_on, affine):
    """A None gate means 1. The residual stream may be fp32 while x is bf16: new_residual keeps
    the residual's dtype, out takes x's."""
    b, seq, c = 1, 6, 200
    residual, x = activations((b, seq, c), torch.float32), activations((b, seq, c), torch.bfloat16)
    gate = modulation("token", b, seq, c) if gate_on else None
    shift = modulation("sample", b, seq, c) if shift_on else None
    scale = modulation("frame", b, seq, c) if scale_on else None
    weight, bias = (torch.randn(c), torch.randn(c)) if affine else (None, None)
    r = ref_residual(residual, x, gate)
    expected = ref_modulate(ref_layer_norm(r, weight, bias), shift, scale)
    check(lambda impl: kernels.gated_residual_norm_modulate(
        residual, x, gate, shift, scale, eps=EPS, weight=weight, bias=bias, impl=impl),
        [(expected, torch.bfloat16), (r, torch.float32)])


def test_gated_residual_without_gate_into_fp32_stream():
    residual, x = activations((2, 6, 64), torch.float32), activations((2, 6, 64), torch.float16)
    check(lambda impl: (kernels.gated_residual(residual, x, None, impl=impl),),
          [(ref_residual(residual, x, None), torch.float32)])


def test_rms_norm_without_weight():
    x = activations((1, 6, 100), torch.float16)
    check(lambda impl: (kernels.rms_norm(x, None, eps=EPS, impl=impl),),
          [(ref_rms_norm(x, torch.ones(100)), torch.float16)])


# ---------------------------------------------------------------------------------------------
# Arbitrary strides: views as the Wan block produces them

def test_strided_inputs():
    """x transposed (channel stride != 1), residual a column slice (row stride 2C), modulation
    chunks of Wan's [B, 6, C] and per-frame [B, F, 6, C] tensors."""
    b, seq, c = 2, 6, 160
    x = activations((b, c, seq), torch.bfloat16).transpose(1, 2)
    residual = activations((b, seq, 2 * c), torch.bfloat16)[..., :c]
    shift, scale, gate = torch.randn(b, 6, c).chunk(6, dim=1)[:3]
    frame_scale = torch.randn(b, FRAMES, 6, c).chunk(6, dim=2)[4]
    r = ref_residual(residual, x, gate)
    check(lambda impl: kernels.gated_residual_norm_modulate(residual, x, gate, shift, frame_scale,
                                                            eps=EPS, impl=impl),
          [(ref_modulate(ref_layer_norm(r), shift, frame_scale), torch.bfloat16),
           (r, torch.bfloat16)])
    check(lambda impl: (kernels.norm_modulate(x, shift, scale, eps=EPS, impl=impl),),
          [(ref_modulate(ref_layer_norm(x.double()), shift, scale), torch.bfloat16)])
    check(lambda impl: (kernels.rms_norm(x, residual[0, 0], eps=EPS, impl=impl),),
          [(ref_rms_norm(x, residual[0, 0]), torch.bfloat16)])


def test_strided_rotary():
    """q as a slice of a fused qkv projection [B, L, 3, H, D]; cos/sin as column slices."""
    b, seq, h, d = 2, 4, 4, 16
    q = torch.randn(b, seq, 3, h, d).to(torch.bfloat16)[:, :, 0]
    angles = torch.rand(seq, d) * 10
    cos, sin = angles.cos()[:, : d // 2], angles.sin()[:, ::2]
    check(lambda impl: (kernels.rotary_embedding(q, cos, sin, impl=impl),),
          [(ref_rotary(q, cos, sin), torch.bfloat16)])


# ---------------------------------------------------------------------------------------------
# Wan's RoPE table against the official code

def test_wan_rope_matches_official_rope_apply():
    """``rotary_embedding`` with ``wan_rope_cos_sin`` equals the official ``rope_apply`` (float64
    complex math there; fp32 tables and math here: ~1e-6 relative)."""
    from reference import official_module
    model = official_module("modules/model")
    grid, n, d = (3, 4, 5), 2, 128
    x = torch.randn(1, grid[0] * grid[1] * grid[2], n, d)
    freqs = torch.cat([model.rope_params(1024, d - 4 * (d // 6)),
                       model.rope_params(1024, 2 * (d // 6)),
                       model.rope_params(1024, 2 * (d // 6))], dim=1)
    expected = model.rope_apply(x, torch.tensor([grid]), freqs).double()
    cos, sin = kernels.wan_rope_cos_sin(grid, d)
    check(lambda impl: (kernels.rotary_embedding(x, cos, sin, impl=impl),),
          [(expected, torch.float32)])


# ---------------------------------------------------------------------------------------------
# GPU code generation, checked without a GPU: compile for real targets and read the assembly

GPU_TARGETS = {"sm_90": ("cuda", 90, 32), "gfx942": ("hip", "gfx942", 64)}
MEMORY_OP = {"cuda": r"\b(ld|st)\.global\S*", "hip": r"\b(global|buffer)_(load|store)_\w+"}
WIDE = {"cuda": r"\.v4\.", "hip": r"dwordx4|b128"}  # 128 bits per instruction
ROW_TYPES = {"out_ptr": "*bf16", "res_out_ptr": "*bf16", "x_ptr": "*bf16", "res_ptr": "*bf16",
             "gate_ptr": "*fp32", "shift_ptr": "*fp32", "scale_ptr": "*fp32",
             "weight_ptr": "*fp32", "bias_ptr": "*fp32", "eps": "fp32"}
NO_RESIDUAL = dict(res_out_ptr=None, res_ptr=None, gate_ptr=None)
NO_MODULATION = dict(shift_ptr=None, scale_ptr=None)
BLOCK_C = 8192  # C = 5120 (Wan 14B)
LAUNCHES = {  # op: (kernel, argument types, constexprs, tile size) at Wan 14B sizes
    "norm_modulate": ("row_kernel", ROW_TYPES,
                      dict(NORM="layer", BLOCK_C=BLOCK_C, **NO_RESIDUAL), BLOCK_C),
    "gated_residual_norm_modulate": ("row_kernel", ROW_TYPES, dict(
        NORM="layer", BLOCK_C=BLOCK_C, weight_ptr=None, bias_ptr=None), BLOCK_C),
    "gated_residual": ("row_kernel", ROW_TYPES, dict(
        NORM="none", BLOCK_C=BLOCK_C, out_ptr=None, weight_ptr=None, bias_ptr=None,
        **NO_MODULATION), BLOCK_C),
    "rms_norm": ("row_kernel", ROW_TYPES, dict(
        NORM="rms", BLOCK_C=BLOCK_C, bias_ptr=None, **NO_RESIDUAL, **NO_MODULATION), BLOCK_C),
    "rotary_embedding": ("rotary_kernel", {"out_ptr": "*bf16", "x_ptr": "*bf16",
                                           "cos_ptr": "*fp32", "sin_ptr": "*fp32"},
                         dict(BLOCK_H=8, BLOCK_D2=64), 8 * 128),  # H = 40, D = 128
}

# Compiles each job as a launch specialises it: pointers and integers that are multiples of 16
# (C and every stride at Wan sizes) get the divisibility hint; L, H and frame groups do not.
COMPILE_JOBS = """
import importlib.util, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
spec = importlib.util.spec_from_file_location("triton_kernels", sys.argv[1])
kernels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernels)
asm = []
for job in json.load(sys.stdin):
    fn = getattr(kernels, job["kernel"])
    signature = {n: "constexpr" if n in job["constexprs"] else job["types"].get(n, "i32")
                 for n in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if signature[n] not in ("constexpr", "fp32")
             and n not in ("L", "H", "gate_group", "shift_group", "scale_group")}
    target = GPUTarget(*job["target"])
    compiled = triton.compile(ASTSource(fn, signature, job["constexprs"], attrs), target=target,
                              options={"num_warps": job["num_warps"]})
    asm.append(compiled.asm["ptx" if target.backend == "cuda" else "amdgcn"])
print(json.dumps(asm))
"""


def test_kernels_compile_for_gpus_with_full_width_memory_ops():
    """Every launch variant compiles for Hopper (sm_90) and MI300 (gfx942), and every global load
    and store moves 128 bits (the bandwidth design: vectorised, single pass). Compiled in a child
    process: a process that runs the Triton interpreter cannot compile for a GPU."""
    jobs = [dict(name=f"{target}/{op}", kernel=kernel, types=types, constexprs=constexprs,
                 target=spec, num_warps=triton_ops._num_warps(tile, warp_size=spec[2]))
            for target, spec in GPU_TARGETS.items()
            for op, (kernel, types, constexprs, tile) in LAUNCHES.items()]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    child = subprocess.run([sys.executable, "-c", COMPILE_JOBS, triton_kernels.__file__],
                           input=json.dumps(jobs), env=env, capture_output=True, text=True,
                           timeout=600)
    assert child.returncode == 0, child.stderr[-4000:]
    for job, asm in zip(jobs, json.loads(child.stdout), strict=True):
        backend = job["target"][0]
        ops = [m.group(0) for m in re.finditer(MEMORY_OP[backend], asm)]
        assert ops and all(re.search(WIDE[backend], op) for op in ops), (job["name"], ops)


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the argument, never a silent broadcast

X = torch.randn(2, 6, 8)


@pytest.mark.parametrize("call, match", [
    (lambda: kernels.norm_modulate(X[0], None, None), "x must be 3-D"),
    (lambda: kernels.norm_modulate(X, torch.randn(2, 1, 7), None), r"shift has shape \(2, 1, 7\)"),
    (lambda: kernels.norm_modulate(X, None, torch.randn(2, 4, 1, 8)), "scale .* F dividing 6"),
    (lambda: kernels.norm_modulate(X, None, torch.randn(1, 6, 8)), "scale has shape"),
    (lambda: kernels.norm_modulate(X, None, None, weight=torch.ones(7)), "weight must be"),
    (lambda: kernels.norm_modulate(X, torch.randn(2, 1, 8, device="meta"), None),
     "shift is on meta"),
    (lambda: kernels.gated_residual(X, torch.randn(2, 5, 8), None), r"x has shape \(2, 5, 8\)"),
    (lambda: kernels.gated_residual(X, X.to("meta"), None), "x is on meta"),
    (lambda: kernels.gated_residual(X, X, torch.ones(2, 1, 8, dtype=torch.int32)),
     "gate must be a floating-point"),
    (lambda: kernels.gated_residual_norm_modulate(X, X, None, None, None, bias=torch.ones(8, 1)),
     "bias must be"),
    (lambda: kernels.rms_norm(X.long(), None), "x must be floating point"),
    (lambda: kernels.rms_norm(X, None, impl="cuda"), "impl must be"),
    (lambda: kernels.rotary_embedding(torch.randn(1, 6, 2, 7), torch.ones(6, 3), torch.ones(6, 3)),
     "head dim must be even"),
    (lambda: kernels.rotary_embedding(torch.randn(1, 6, 2, 8), torch.ones(5, 4), torch.ones(6, 4)),
     r"cos must be .*\[6, 4\]"),
    (lambda: kernels.rotary_embedding(torch.randn(1, 6, 2, 8), torch.ones(6, 4),
                                      torch.ones(1, 6, 4)), "sin has shape"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(triton_ops, "_INTERPRET", False)
    with pytest.raises(ValueError, match="needs GPU tensors"):
        kernels.norm_modulate(X, None, None, impl="triton")
