"""Layer dispatch: on each simulated platform every layer binds the implementation of the policy
in issue #2 (CUDA/ROCm Triton, MUSA compiled native, NPU/XPU/MPS/CPU native) and computes the
right thing on CPU tensors (Triton through its interpreter). Plus the two switches (fields of
``runtime.RuntimeOptions``, defaulted from the environment) and the report.

``torch.compile`` is replaced by a recording identity here: inductor on CPU costs ~20 s cold, and
``test_layer_compile`` compiles a real MUSA-dispatched layer. Expected outputs use torch's own
fp32 primitives (F.layer_norm, F.rms_norm, complex multiply): fp32 math on <= 64 values,
so rtol/atol 1e-5.
"""

import pytest
import torch
import torch.nn.functional as F

from wanrt import kernels
from wanrt.kernels import platforms
from wanrt.wan_core import layers, runtime

# Issue #2, item 4.
EXPECTED = {"cuda": "triton", "rocm": "triton", "musa": "compiled-native", "npu": "native",
            "xpu": "native", "mps": "native", "cpu": "native"}
LAYERS = ["NormModulate", "GatedResidualNormModulate", "GatedResidual", "RMSNorm",
          "RotaryEmbedding"]
B, L, C, H, D, EPS = 2, 6, 64, 4, 16, 1e-6


@pytest.fixture(autouse=True)
def _clean_switches(monkeypatch):
    for var in ("WANRT_PLATFORM", "WANRT_DISABLE_FUSED_KERNELS", "WANRT_DISABLE_LAYER_COMPILE"):
        monkeypatch.delenv(var, raising=False)
    platforms._platform_for.cache_clear()
    yield
    platforms._platform_for.cache_clear()


@pytest.fixture
def compile_calls(monkeypatch):
    """Functions handed to ``torch.compile`` (which returns them unchanged)."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(fn) or fn)
    return calls


def on_platform(monkeypatch, name):
    monkeypatch.setenv("WANRT_PLATFORM", name)
    platforms._platform_for.cache_clear()


def build(name):
    """``(layer, inputs, expected outputs)`` with random parameters."""
    torch.manual_seed(0)
    x, residual = torch.randn(B, L, C), torch.randn(B, L, C)
    gate, shift, scale = (torch.randn(B, 1, C) for _ in range(3))
    layer = {"NormModulate": lambda: layers.NormModulate(C, eps=EPS, affine=True),
             "GatedResidualNormModulate": lambda: layers.GatedResidualNormModulate(C, eps=EPS),
             "GatedResidual": layers.GatedResidual,
             "RMSNorm": lambda: layers.RMSNorm(C, eps=EPS),
             "RotaryEmbedding": layers.RotaryEmbedding}[name]()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    if name == "NormModulate":
        y = F.layer_norm(x, (C,), layer.weight, layer.bias, EPS) * (1 + scale) + shift
        return layer, (x, shift, scale), (y,)
    if name == "GatedResidualNormModulate":
        r = residual + gate * x
        return layer, (residual, x, gate, shift, scale), (
            F.layer_norm(r, (C,), eps=EPS) * (1 + scale) + shift, r)
    if name == "GatedResidual":
        return layer, (residual, x, gate), (residual + gate * x,)
    if name == "RMSNorm":
        return layer, (x,), (F.rms_norm(x, (C,), layer.weight, EPS),)
    q, angles = torch.randn(B, L, H, D), torch.rand(L, D // 2) * 10
    rot = torch.polar(torch.ones_like(angles), angles)[:, None, :]
    expected = torch.view_as_real(torch.view_as_complex(q.unflatten(-1, (-1, 2))) * rot)
    return layer, (q, angles.cos(), angles.sin()), (expected.flatten(-2),)


def assert_computes(layer, inputs, expected):
    with torch.no_grad():
        out = layer(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    for o, e in zip(out, expected, strict=True):
        torch.testing.assert_close(o, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("platform", list(EXPECTED))
def test_each_platform_binds_its_policy_and_computes_correctly(monkeypatch, compile_calls,
                                                               platform, name):
    on_platform(monkeypatch, platform)
    layer, inputs, expected = build(name)
    assert layer.impl == EXPECTED[platform]
    assert compile_calls == ([layer.forward_native] if platform == "musa" else [])
    assert_computes(layer, inputs, expected)


@pytest.mark.parametrize("platform", list(EXPECTED))
def test_report_names_each_layers_implementation(monkeypatch, platform):
    on_platform(monkeypatch, platform)
    report = layers.implementation_report()
    assert {name: report[name] for name in LAYERS} == {name: EXPECTED[platform] for name in LAYERS}
    assert kernels.default_impl() == ("triton" if EXPECTED[platform] == "triton" else "torch")


@pytest.mark.parametrize("by_env", [False, True], ids=["api", "env"])
def test_fused_switch_makes_cuda_layers_native(monkeypatch, by_env):
    on_platform(monkeypatch, "cuda")
    if by_env:
        monkeypatch.setenv("WANRT_DISABLE_FUSED_KERNELS", "1")
    layer, inputs, expected = build("GatedResidualNormModulate")
    if not by_env:
        assert layer.impl == "triton"
        runtime.apply(layer, runtime.RuntimeOptions(fused_kernels=False))
    assert layer.impl == "native"
    assert_computes(layer, inputs, expected)


@pytest.mark.parametrize("by_env", [False, True], ids=["api", "env"])
def test_compile_switch_makes_musa_layers_native(monkeypatch, compile_calls, by_env):
    on_platform(monkeypatch, "musa")
    if by_env:
        monkeypatch.setenv("WANRT_DISABLE_LAYER_COMPILE", "1")
    layer, inputs, expected = build("NormModulate")
    if not by_env:
        assert layer.impl == "compiled-native"
        runtime.apply(layer, runtime.RuntimeOptions(layer_compile=False))
    assert layer.impl == "native"
    assert compile_calls == ([] if by_env else [layer.forward_native])
    assert_computes(layer, inputs, expected)


def test_each_switch_leaves_the_other_path_alone():
    options = runtime.RuntimeOptions
    assert options(platform="musa", fused_kernels=False).layer_impl(layers.RMSNorm) == "compiled-native"
    assert options(platform="cuda", layer_compile=False).layer_impl(layers.RMSNorm) == "triton"


@pytest.mark.parametrize("platform, fused, expected", [
    ("cuda", True, None), ("cuda", False, "torch"), ("rocm", True, None), ("musa", True, "torch"),
    ("npu", True, "torch"), ("cpu", True, "torch")])
def test_kernels_called_outside_the_layers_follow_the_same_switch(platform, fused, expected):
    """ComfyUI's own blocks under WanRT Accelerate call the kernels with ``kernel_impl()``: the
    platform's choice (Triton where its policy runs it) unless fused kernels are off."""
    options = runtime.RuntimeOptions(platform=platform, fused_kernels=fused)
    assert options.kernel_impl() == expected


def test_cuda_without_triton_runs_native(monkeypatch):
    """E.g. Windows: CUDA torch, no triton package."""
    on_platform(monkeypatch, "cuda")
    monkeypatch.setattr(platforms, "_triton_installed", lambda: False)
    layer, inputs, expected = build("RMSNorm")
    assert layer.impl == "native" and kernels.default_impl() == "torch"
    assert_computes(layer, inputs, expected)


def test_switch_applies_to_layers_built_afterwards(monkeypatch):
    """Layers keep the implementation they were built with; the report of a model says so."""
    on_platform(monkeypatch, "cuda")
    before = layers.RMSNorm(C)
    monkeypatch.setenv("WANRT_DISABLE_FUSED_KERNELS", "1")
    model = torch.nn.Sequential(before, layers.RMSNorm(C), layers.GatedResidual())
    assert layers.implementation_report(model) == {"RMSNorm": "native, triton",
                                                   "GatedResidual": "native"}
