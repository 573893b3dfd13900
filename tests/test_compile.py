"""Compile modes of the Wan DiT (``wan_core.compile``) and the fast-forward pieces of the model.

Compiles are counted with a counting backend (``CompileCounterWithBackend``: one count per frame
Dynamo compiles, i.e. per graph, first compiles and recompiles alike) over the real sampling loop
(``wan_core.sampling.sample``). Tiny fp32 models on CPU; the counting tests trace with the
``eager`` backend (the captured graph runs the same aten ops as the model, so compiled outputs
equal eager ones); one test runs inductor and compares to eager in fp32.
"""

from dataclasses import replace

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from wanrt.kernels import PLATFORMS, platforms
from wanrt.wan_core.attention import auto_backend
from wanrt.wan_core.compile import MODES, compile_dit, compile_summary, persistent_compile_cache
from wanrt.wan_core.dit import DiTConfig, WanModel, init_random_
from wanrt.wan_core.sampling import sample

from dit_helpers import rel_l2

T2V = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, in_dim=16, out_dim=16,
                text_dim=16, freq_dim=16)
TI2V = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, in_dim=48, out_dim=48,
                 text_dim=16, freq_dim=16)
TEXT_LEN = 6


@pytest.fixture(autouse=True)
def _fresh():
    platforms._platform_for.cache_clear()
    torch._dynamo.reset()
    counters.clear()
    yield
    platforms._platform_for.cache_clear()
    torch._dynamo.reset()


def tiny(config=T2V, seed=0):
    return init_random_(WanModel(config), seed=seed).eval()


def contexts(batch=1):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, TEXT_LEN, T2V.text_dim, generator=g),
            torch.randn(batch, TEXT_LEN, T2V.text_dim, generator=g))


class Log:
    """Wraps models; records ``(expert, batch, t shape)`` of every forward."""

    def __init__(self):
        self.calls = []

    def wrap(self, model, name):
        def forward(x, t, context, **kwargs):
            self.calls.append((name, x.shape[0], tuple(t.shape)))
            return model(x, t, context, **kwargs)
        return forward


def run_sampling(high, low, config, batched_cfg, log, graphs_after_step):
    """Four UniPC steps (t = 999, 937, 833, 624) with CFG on both experts, the A14B switch at
    t = 900; TI2V configs get a first frame, hence per-token timesteps. Records the compile
    count after each step."""
    context, negative = contexts()
    shape = (1, config.out_dim, 3, 4, 6)
    g = torch.Generator().manual_seed(2)
    first_frame = torch.randn(1, config.out_dim, 1, 4, 6, generator=g) if config is TI2V else None
    return sample(log.wrap(high, "high"), shape, context=context, negative_context=negative,
                  seed=0, steps=4, cfg=5.0, cfg_low=3.0, shift=5.0,
                  low_noise_model=log.wrap(low, "low"), boundary=0.9, first_frame=first_frame,
                  batched_cfg=batched_cfg,
                  callback=lambda step, total, x0: graphs_after_step.append(graphs()))


def graphs():
    return counters["stats"]["unique_graphs"]


@torch.no_grad()
@pytest.mark.parametrize("mode, batched_cfg, config", [
    ("blocks", True, T2V), ("blocks", False, T2V), ("blocks", True, TI2V),
    ("full", True, T2V), ("full", False, TI2V), ("layers", True, T2V),
], ids=["blocks-cfg-batch-2", "blocks-cfg-two-passes", "blocks-cfg-batch-2-ti2v",
        "full-cfg-batch-2", "full-cfg-two-passes-ti2v", "layers-cfg-batch-2"])
def test_sampling_compiles_once_then_never_again(mode, batched_cfg, config):
    """Steps x CFG (cond + uncond) x changing timesteps x the A14B expert switch (two model
    instances of one architecture) add no compile after the first forward; blocks and full
    mode compile exactly one graph for everything, which both experts and all blocks reuse."""
    high, low = tiny(config, seed=0), tiny(config, seed=1)
    log, eager_log, after_step = Log(), Log(), []
    expected = run_sampling(high, low, config, batched_cfg, eager_log, [])

    counter = CompileCounterWithBackend("eager")
    for model in (high, low):
        compile_dit(model, mode, backend=counter)
    out = run_sampling(high, low, config, batched_cfg, log, after_step)

    assert log.calls == eager_log.calls
    experts = [name for name, _, _ in log.calls]
    assert "high" in experts and "low" in experts  # the switch happened mid-run
    batches = {batch for _, batch, _ in log.calls}
    assert batches == ({2} if batched_cfg else {1})
    tokens = 3 * 2 * 3
    assert {t_shape for _, _, t_shape in log.calls} == (
        {(b, tokens) for b in batches} if config is TI2V else {(b,) for b in batches})
    assert after_step[0] >= 1 and after_step[-1] == after_step[0]  # nothing after step 1
    assert counter.frame_count == after_step[-1]
    if mode in ("blocks", "full"):
        assert counter.frame_count == 1
    assert not counters["graph_break"]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["blocks", "full"])
def test_new_resolution_or_frame_count_costs_at_most_one_compile(mode):
    """Automatic dynamic shapes: the first size compiles a static graph; the first change of a
    size recompiles once with that size dynamic, and later sizes are free. Blocks only see the
    token count (one recompile in all, shared by the 3 blocks); the whole model (1 block, to
    keep tracing short) sees frames and height/width apart."""
    model = tiny(T2V if mode == "blocks" else replace(T2V, num_layers=1))
    counter = CompileCounterWithBackend("eager")
    compile_dit(model, mode, backend=counter)
    context, _ = contexts(batch=1)
    counts = []
    # a new resolution, a new frame count, then both new
    for grid in [(3, 4, 6), (3, 6, 8), (5, 6, 8), (2, 8, 4)]:
        x = torch.randn(1, 16, *grid)
        model(x, torch.tensor([900.0]), context)
        counts.append(counter.frame_count)
    assert counts == ([1, 2, 2, 2] if mode == "blocks" else [1, 2, 3, 3])


@torch.no_grad()
def test_blocks_with_inductor_equal_eager_in_fp32():
    """Inductor reorders the fp32 reductions (LayerNorm, RMSNorm, softmax), so the tolerance is
    fp32 rounding (relative L2 1e-5), not bit equality. Fused projections, TI2V per-token t."""
    model = tiny(replace(TI2V, num_layers=2)).fuse_projections()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 2, 4, 4, generator=g)
    t = torch.full((1, 2 * 2 * 2), 700.0)
    t[:, :4] = 0
    context = torch.randn(1, TEXT_LEN, TI2V.text_dim, generator=g)
    expected = model(x, t, context)
    compile_dit(model, "blocks")
    assert rel_l2(model(x, t, context), expected) < 1e-5
    assert counters["stats"]["unique_graphs"] == 1


@torch.no_grad()
def test_triton_kernels_stay_custom_ops_inside_compiled_blocks(monkeypatch):
    """On CUDA the layers run the fused Triton kernels (here interpreted on CPU): blocks mode
    traces them as custom ops in one fullgraph graph, reading the strided q/k/v slices of the
    fused projection, and runs the very same kernels as eager (bit-equal bf16)."""
    monkeypatch.setenv("WANRT_PLATFORM", "cuda")
    platforms._platform_for.cache_clear()
    config = replace(T2V, num_layers=2)
    model = init_random_(WanModel(config, dtype=torch.bfloat16), seed=0).eval()
    model.fuse_projections()
    assert {m.impl for m in model.modules() if hasattr(m, "impl")} == {"triton"}
    x, t, context = torch.randn(1, 16, 1, 4, 4), torch.tensor([700.0]), contexts()[0]
    expected = model(x, t, context)
    counter = CompileCounterWithBackend("aot_eager")
    compile_dit(model, "blocks", backend=counter)
    assert torch.equal(model(x, t, context), expected)
    assert counter.frame_count == 1 and not counters["graph_break"]


@pytest.mark.parametrize("name", list(PLATFORMS))
def test_summary_says_what_each_platform_compiles(monkeypatch, name):
    monkeypatch.setenv("WANRT_PLATFORM", name)
    platforms._platform_for.cache_clear()
    lines = {mode: compile_summary(mode) for mode in MODES}
    assert all(line.startswith(f"{name}, compile {mode}") and "\n" not in line
               for mode, line in lines.items())
    if name == "npu":
        assert all("not supported" in lines[mode] for mode in ("layers", "blocks", "full"))
    elif name in ("cuda", "rocm"):  # the Triton kernels stand in for the per-layer compile
        assert "fused Triton kernels" in lines["layers"] and "compile of" not in lines["layers"]
    else:
        assert "per-layer torch.compile" in lines["layers"]
    if name != "npu":
        assert "shared by all blocks" in lines["blocks"] and "whole model" in lines["full"]


@torch.no_grad()
def test_npu_runs_every_mode_eagerly(monkeypatch):
    """``Platform.compile`` is False on Ascend: compile_dit leaves the model as it is."""
    monkeypatch.setenv("WANRT_PLATFORM", "npu")
    platforms._platform_for.cache_clear()
    model, counter = tiny(), CompileCounterWithBackend("eager")
    for mode in MODES:
        assert compile_dit(model, mode, backend=counter) is model
    model(torch.randn(1, 16, 2, 4, 4), torch.tensor([500.0]), contexts()[0])
    assert counter.frame_count == 0


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="'regional'.*off, layers, blocks, full"):
        compile_dit(tiny(), "regional")
    with pytest.raises(ValueError, match="'max'"):
        compile_summary("max")


def fp8_projections(model):
    """q/k/v and k/v weights as float8 with a per-tensor scale, as ``load_dit(keep_fp8=True)``."""
    for block in model.blocks:
        for linear in (block.self_attn.q, block.self_attn.k, block.self_attn.v,
                       block.cross_attn.k, block.cross_attn.v):
            scale = linear.weight.abs().max() / 448
            linear.weight.data = (linear.weight / scale).to(torch.float8_e4m3fn)
            linear.weight_scale = scale
    return model


I2V = replace(T2V, in_dim=36, image_dim=24)  # Wan 2.1 I2V: CLIP tokens through k_img / v_img


@torch.no_grad()
@pytest.mark.parametrize("config, fp8", [(T2V, False), (T2V, True), (I2V, False)],
                         ids=["t2v", "t2v-fp8-scaled", "i2v-clip"])
def test_fused_projections_give_the_same_outputs(config, fp8):
    """One stacked GEMM computes the same dot products as two or three: fp32 rounding (1e-6)."""
    model = tiny(config)
    if fp8:
        model = fp8_projections(model)
    g = torch.Generator().manual_seed(3)
    x, t, context = (torch.randn(2, 16, 2, 4, 6, generator=g),
                     torch.tensor([900.0, 100.0]), contexts(2)[0])
    extra = ({"y": torch.randn(2, 20, 2, 4, 6, generator=g),
              "clip_fea": torch.randn(2, 5, 24, generator=g)} if config is I2V else {})
    expected = model(x, t, context, **extra)
    model.fuse_projections()
    names = {name for name, _ in model.named_parameters()}
    assert {"blocks.0.self_attn.fused.q_k_v.weight", "blocks.0.cross_attn.fused.k_v.weight",
            "blocks.0.cross_attn.q.weight"} <= names  # cross-attention q reads x, not the text
    assert not any(name.startswith(("blocks.0.self_attn.q.", "blocks.0.cross_attn.k."))
                   for name in names)
    if config is I2V:
        assert "blocks.0.cross_attn.fused.k_img_v_img.weight" in names
    if fp8:
        fused = model.blocks[0].self_attn.fused["q_k_v"]
        assert fused.weight.dtype == torch.float8_e4m3fn and fused.weight_scale.shape == (96,)
    assert rel_l2(model(x, t, context, **extra), expected) < 1e-6


@torch.no_grad()
def test_residual_stream_is_contiguous_and_never_a_view():
    """Every block gets a contiguous ``[B, L, C]`` tensor of its own (no transposed or
    reshaped view of another tensor), block 0 included: the same input kind for every block."""
    model = tiny().fuse_projections()
    seen = []
    for block in model.blocks:
        block.register_forward_pre_hook(
            lambda module, args: seen.append((args[0].is_contiguous(), args[0]._is_view())))
    model(torch.randn(2, 16, 3, 4, 6), torch.tensor([900.0, 100.0]), contexts(2)[0])
    assert seen == [(True, False)] * T2V.num_layers


@torch.no_grad()
def test_sdpa_kernel_backend_traces_without_graph_break():
    """A backend held to one SDPA kernel (flash: the one CPU has) works inside a fullgraph
    compiled block and gives what the default SDPA gives; "auto" is plain SDPA off Hopper."""
    model = tiny()
    x, t, context = torch.randn(1, 16, 2, 4, 6), torch.tensor([600.0]), contexts()[0]
    expected = model(x, t, context)
    model.set_attention_backend("sdpa-flash")
    counter = CompileCounterWithBackend("eager")
    compile_dit(model, "blocks", backend=counter)
    torch.testing.assert_close(model(x, t, context), expected, rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1 and not counters["graph_break"]
    assert auto_backend("cpu", torch.bfloat16) == "sdpa"
    assert {m.backend for m in tiny().modules() if hasattr(m, "backend")} == {"auto"}



def test_persistent_compile_cache_moves_inductors_caches_to_a_kept_folder(tmp_path,
                                                                           monkeypatch):
    """Inductor reads its cache folder from TORCHINDUCTOR_CACHE_DIR at every compile; the FX
    graph and AOT autograd caches are on. The user's own folder wins over ours. (That a second
    process then skips code generation is measured by ``bench/step_cache.py --first-step``.)"""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with inductor_config.patch(fx_graph_cache=False), \
            functorch_config.patch(enable_autograd_cache=False):  # restored on exit
        folder = persistent_compile_cache()
        assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    assert folder == tmp_path / "wanrt" / "torchinductor" and folder.is_dir()
    assert cache_dir() == str(folder)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache() == tmp_path / "mine"


def test_the_runtime_options_platform_decides_whether_compile_applies():
    """``runtime.apply`` compiles for its options' platform, not the process's: Ascend NPU
    policy (no torch.compile) leaves the blocks eager even on a machine that compiles."""
    from wanrt.wan_core import runtime

    model = tiny()
    runtime.apply(model, runtime.RuntimeOptions(
        platform="npu", compile=runtime.CompileOptions("blocks", backend="eager")))
    assert all(block._compiled_call_impl is None for block in model.blocks)
    runtime.apply(model, runtime.RuntimeOptions(
        platform="cpu", compile=runtime.CompileOptions("blocks", backend="eager")))
    assert all(block._compiled_call_impl is not None for block in model.blocks)
