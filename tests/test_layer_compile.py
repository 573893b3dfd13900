"""torch.compile over the layers.

- The MUSA path (per-layer ``torch.compile`` of the native forward) compiles with inductor on CPU,
  matches eager, shares its graph across layer instances, and a new sequence length costs at most
  one recompile.
- The Triton custom ops trace under ``fullgraph=True`` (no graph break) and their fake impls give
  the real outputs' shapes, strides and dtypes.
"""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from wanrt import kernels
from wanrt.kernels import platforms, triton_ops
from wanrt.wan_core import layers

C, H = 64, 4


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    platforms._platform_for.cache_clear()
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    yield
    platforms._platform_for.cache_clear()
    torch._dynamo.reset()


def on_platform(monkeypatch, name):
    monkeypatch.setenv("WANRT_PLATFORM", name)
    platforms._platform_for.cache_clear()


def block_inputs(seq, dtype=torch.float32):
    """``(residual, x, gate, shift, scale)`` as in a Wan block: fp32 ``[B, 1, C]`` modulation."""
    return (torch.randn(2, seq, C, dtype=dtype), torch.randn(2, seq, C, dtype=dtype),
            *(torch.randn(2, 1, C) for _ in range(3)))


@torch.no_grad()
def test_musa_layers_compile_with_inductor(monkeypatch):
    """Inductor reorders the fp32 reductions, so compiled vs eager agree to fp32 rounding of a
    64-wide LayerNorm (rtol/atol 1e-5), not bit for bit."""
    on_platform(monkeypatch, "musa")
    blocks = [layers.GatedResidualNormModulate(C) for _ in range(3)]
    assert {b.impl for b in blocks} == {"compiled-native"}

    graphs = []
    for seq in (12, 20, 28):
        inputs = block_inputs(seq)
        for block in blocks:
            for compiled, eager in zip(block(*inputs), block.forward_native(*inputs)):
                torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    # one graph for all three instances; a new length recompiles at most once (to a dynamic
    # length), after which lengths are free
    assert graphs[0] == 1 and graphs[1] <= 2 and graphs[2] == graphs[1]


class FusedChain(torch.nn.Module):
    """The Wan block's elementwise work, all on the fused path."""

    def __init__(self):
        super().__init__()
        self.norm1 = layers.NormModulate(C, affine=True)
        self.norm2 = layers.GatedResidualNormModulate(C)
        self.norm_q = layers.RMSNorm(C)
        self.rope = layers.RotaryEmbedding()
        self.residual = layers.GatedResidual()

    def forward(self, residual, x, gate, shift, scale, cos, sin):
        y = self.norm1(x, shift, scale)
        y, residual = self.norm2(residual, y, gate, shift, scale)
        q = self.rope(self.norm_q(y).unflatten(-1, (H, -1)), cos, sin)
        return y, self.residual(residual, q.flatten(-2), gate)


@torch.no_grad()
def test_triton_custom_ops_trace_without_graph_break(monkeypatch):
    on_platform(monkeypatch, "cuda")
    model = FusedChain()
    assert set(layers.implementation_report(model).values()) == {"triton"}
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    for seq in (6, 10, 14):
        angles = torch.rand(seq, C // H // 2)
        inputs = (*block_inputs(seq, torch.bfloat16), angles.cos(), angles.sin())
        for out, ref in zip(compiled(*inputs), model(*inputs), strict=True):
            assert out.dtype == ref.dtype == torch.bfloat16
            torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same kernels
    assert backend.frame_count <= 2  # a new length: at most one recompile


def _op_samples():
    """``{op name: sample arguments}`` with bf16 activations, fp32 modulation and None optionals."""
    x = torch.randn(2, 6, C, dtype=torch.bfloat16)
    mod = torch.randn(2, 3, 1, C)  # per-frame
    w = torch.randn(C)
    angles = torch.rand(6, 8)
    return {
        "norm_modulate": (x, mod, None, w, None, 1e-6),
        "gated_residual_norm_modulate": (x.float(), x, None, mod, mod, None, w, 1e-6),
        "gated_residual": (x.float(), x, mod),
        "rms_norm": (x, None, 1e-6),
        "rotary_embedding": (x.unflatten(-1, (4, 16)), angles.cos(), angles.sin()),
    }


@pytest.mark.parametrize("name", list(_op_samples()))
def test_fake_impls_match_the_kernels(name):
    """Schema, fake-tensor and AOT-dispatch checks: the fake outputs have the real outputs'
    shapes, strides and dtypes (None optionals included)."""
    assert triton_ops._INTERPRET  # tests/conftest.py runs Triton in its interpreter
    torch.library.opcheck(getattr(torch.ops.wanrt, name), _op_samples()[name],
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
