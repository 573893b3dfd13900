"""fp8 GEMMs (``kernels.fp8``) and their opt-in use in the DiT blocks.

Reference: the dequantise-then-matmul path in fp32 (the weights are the same fp8 values in both,
so the difference is the e4m3 rounding of the activations alone). e4m3 keeps 3 mantissa bits:
each activation is rounded with a relative error of at most 2^-4 (6.25%), about 1.8% rms for
values spread over a binade; summed over K products the output's relative L2 error is of that
size. Tolerance: relative L2 0.04. ``torch._scaled_mm`` runs on the CPU in torch 2.13 for
per-tensor scales, so that path is tested for real; per-row scales (CUDA only) run through an
emulation of its documented semantics ``(a · scale_a) @ (b · scale_b)``, fp32 accumulation.
"""

import pytest
import torch

from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from wanrt import kernels
from wanrt.wan_core.compile import compile_dit
from wanrt.kernels import platforms
from wanrt.kernels.fp8 import E4M3, fp8_linear, quantise
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.dit.model import Linear, dequantise

from dit_helpers import rel_l2

FP8_TOLERANCE = 0.04


def emulated_scaled_mm(a, b, *, scale_a, scale_b, out_dtype):
    return ((a.float() * scale_a) @ (b.float() * scale_b)).to(out_dtype)


def fp8_weight(n, k, per_row, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    amax = w.abs().amax(dim=1) if per_row else w.abs().amax()
    scale = amax / 448
    fp8 = (w / (scale[:, None] if per_row else scale)).to(E4M3)
    return fp8, scale


@pytest.mark.parametrize("granularity, per_row_weight, mm", [
    ("tensor", False, torch._scaled_mm),
    ("row", True, emulated_scaled_mm),
    ("row", False, emulated_scaled_mm),
], ids=["tensor-real-scaled-mm", "row-row", "row-tensor-weight"])
def test_fp8_linear_is_the_fp32_matmul_within_fp8_rounding(granularity, per_row_weight, mm):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 64, generator=g) * torch.logspace(-1, 1, 64)  # channels of many scales
    weight, scale = fp8_weight(96, 64, per_row_weight)
    bias = torch.randn(96, generator=g)
    reference = torch.nn.functional.linear(x, dequantise(weight, scale, torch.float32), bias)
    out = fp8_linear(x, weight, scale, bias, granularity, scaled_mm=mm)
    assert out.shape == (2, 24, 96) and out.dtype == torch.float32
    error = rel_l2(out, reference)
    assert 1e-4 < error < FP8_TOLERANCE, error  # rounded, but within fp8's rounding


def test_the_real_scaled_mm_and_the_emulation_agree():
    """The emulation the row-wise test relies on is ``torch._scaled_mm``'s semantics (checked
    where the CPU runs it: per-tensor scales; fp32 accumulation both, so to fp32 rounding)."""
    weight, scale = fp8_weight(48, 32, per_row=False)
    x_fp8, scale_x = quantise(torch.randn(10, 32), "tensor")
    args = dict(scale_a=scale_x, scale_b=scale, out_dtype=torch.float32)
    torch.testing.assert_close(torch._scaled_mm(x_fp8, weight.t(), **args),
                               emulated_scaled_mm(x_fp8, weight.t(), **args),
                               rtol=1e-5, atol=1e-6)


def test_quantise_maps_each_rows_largest_value_to_the_e4m3_maximum():
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 3.0, -1.0]])
    x_fp8, scale = quantise(x, "row")
    assert x_fp8.dtype == E4M3 and scale.shape == (2, 1)
    assert x_fp8.float().abs().amax(dim=1).tolist() == [448.0, 448.0]
    torch.testing.assert_close(x_fp8.float() * scale, x, rtol=2 ** -4, atol=0)


@pytest.mark.parametrize("granularity", ["row", "tensor"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_fused_quantisation_kernel_is_bit_identical_to_the_torch_path(granularity, dtype):
    """The Triton pass (interpreter on CPU) against the torch ops: same e4m3 bits, same scales.
    The rows span 5 decades, so both e4m3's normal values and its subnormals (below 2^-6) are
    hit; K = 100 leaves a partly masked tile; a zero row takes the
    1e-12 floor of the scale."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 100, generator=g) * torch.logspace(-4, 1, 100)[torch.randperm(100, generator=g)]
    x[3] = 0
    x = x.to(dtype)
    fused, fused_scale = quantise(x, granularity, impl="triton")
    ref, ref_scale = quantise(x, granularity, impl="torch")
    assert fused.dtype == E4M3 and fused_scale.shape == ref_scale.shape
    magnitude = ref.float().abs()
    assert ((magnitude > 0) & (magnitude < 2 ** -6)).sum() > 20 and (magnitude >= 2 ** -6).sum() > 300
    assert torch.equal(fused.view(torch.uint8), ref.view(torch.uint8))
    assert torch.equal(fused_scale, ref_scale)


def test_quantise_takes_the_torch_ops_while_compiling():
    """Under torch.compile the torch path is traced (Inductor fuses it into the op producing
    x); calling for Triton on a CPU tensor outside the interpreter would fail instead."""
    x = torch.randn(4, 16)
    compiled = torch.compile(lambda t: quantise(t, "row"), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), quantise(x, "row", impl="torch"), rtol=0, atol=0)
    torch._dynamo.reset()


def tiny_fp8_dit():
    """A tiny DiT whose block Linears hold e4m3 weights with per-tensor scales."""
    config = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=16, out_dim=16,
                       text_dim=16, freq_dim=16)
    model = init_random_(WanModel(config)).eval()
    for module in model.blocks.modules():
        if isinstance(module, Linear):
            w = module.weight.data
            scale = w.abs().amax() / 448
            module.weight.data = (w / scale).to(E4M3)
            module.weight_scale = scale
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([600.0]),
              torch.randn(1, 6, 16, generator=g))
    return model, inputs


@torch.no_grad()
def test_the_dit_runs_its_block_gemms_in_fp8_where_the_platform_has_them(monkeypatch):
    model, inputs = tiny_fp8_dit()
    reference = model(*inputs)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return fp8_linear(*args, **kwargs)
    monkeypatch.setattr("wanrt.wan_core.dit.model.fp8_linear", counted)
    model.use_fp8_matmul("tensor")
    assert torch.equal(model(*inputs), reference)  # the CPU platform has no fp8 GEMMs: fallback
    assert calls == []

    monkeypatch.setattr(kernels, "fp8_matmul_supported", lambda device_type, index, rowwise: True)
    out = model(*inputs)
    linears = [m for m in model.blocks.modules() if isinstance(m, Linear)]
    assert len(calls) == len(linears) == 2 * 10  # q k v o, q k v o, 2 ffn per block
    assert 0 < rel_l2(out, reference) < FP8_TOLERANCE


@torch.no_grad()
def test_fp8_gemm_blocks_compile_to_one_graph_without_breaks():
    """The capability check is a constant while tracing: compiled blocks keep one graph."""
    model, inputs = tiny_fp8_dit()
    model.use_fp8_matmul("row")
    expected = model(*inputs)
    counter = CompileCounterWithBackend("eager")
    torch._dynamo.reset()
    counters.clear()
    compile_dit(model, "blocks", backend=counter)
    for _ in range(2):
        assert torch.equal(model(*inputs), expected)
    assert counter.frame_count == 1 and not counters["graph_break"]
    torch._dynamo.reset()


@pytest.mark.parametrize("platform, capability, torch_release, rowwise, expected", [
    ("cuda", (9, 0), "2.4.1", True, True), ("cuda", (8, 9), "2.7.0", True, True),
    ("cuda", (8, 9), "2.6.0+cu124", True, False), ("cuda", (8, 9), "2.6.0", False, True),
    ("cuda", (8, 6), "2.11.0", False, False), ("cpu", None, "2.11.0", False, False),
    ("rocm", (9, 4), "2.11.0", False, False)])
def test_fp8_gemms_follow_the_platform_table(monkeypatch, platform, capability, torch_release,
                                             rowwise, expected):
    """Ada (8.9) runs fp8 GEMMs, with per-row scales only from torch 2.7 (before, Hopper)."""
    monkeypatch.setenv("WANRT_PLATFORM", platform)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch, "__version__", torch_release)
    platforms._platform_for.cache_clear()
    platforms._fp8_matmul_supported.cache_clear()
    try:
        device_type = kernels.current_platform().device_type
        assert kernels.fp8_matmul_supported(device_type, 0, rowwise) is expected
    finally:
        platforms._platform_for.cache_clear()
        platforms._fp8_matmul_supported.cache_clear()
