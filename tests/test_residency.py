"""Model residency (``wan_core.residency``): which model is on the compute device at each stage.

The CPU is the compute device and ``cpu:1`` stands in for the offload device (a different device
to the policy; moving there copies the tensors for real), so a real pipeline run on tiny models
shows where the policy puts each model at every stage.
"""

import argparse

import pytest
import torch
from torch import nn

from wanrt.nodes.host import HeadlessHost
from wanrt.runner.cli import add_arguments, memory_options

from wanrt.wan_core import load_dit, load_text_encoder, load_vae, residency as residency_module
from wanrt.wan_core.lora import apply_lora
from wanrt.wan_core.pipelines import WanPipeline
from wanrt.wan_core.layers.custom_op import implementation_report
from wanrt.wan_core.residency import Residency, StageOutOfMemoryError
from wanrt.wan_core.runtime import RuntimeOptions, bind_layers

F32 = torch.float32
OFFLOAD = "cpu:1"


@pytest.fixture
def a14b_i2v(tiny_models):
    """A fresh Wan 2.2 I2V A14B model set (two experts, text encoder, VAE) and a CLIP model."""
    def dit(name):
        return load_dit(tiny_models / "diffusion_models" / name, dtype=F32)

    return dict(dit=dit("wan2.2_i2v_high_noise_14B_fp16.safetensors"),
                low_noise_dit=dit("wan2.2_i2v_low_noise_14B_fp16.safetensors"),
                vae=load_vae(tiny_models / "vae/wan_2.1_vae.safetensors", dtype=F32),
                text_encoder=load_text_encoder(
                    tiny_models / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", dtype=F32))


class Timeline:
    """Records where every model of a pipeline is whenever one of them runs."""

    def __init__(self, pipe: WanPipeline):
        self.pipe, self.events = pipe, []
        models = {"text_encoder": pipe.text_encoder, "vae": pipe.vae, "high": pipe.dit,
                  "low": pipe.low_noise_dit}
        self.models = {k: m for k, m in models.items() if m is not None}
        self._wrap(pipe.text_encoder, "encode", "text encode")
        self._wrap(pipe.vae, "encode", "image encode")
        self._wrap(pipe.vae, "decode", "decode")
        for name in ("high", "low"):
            self.models[name].register_forward_pre_hook(
                lambda *_, name=name: self._record(f"sample {name}"))

    def _wrap(self, model, method, stage):
        run = getattr(model, method)

        def recorded(*args, **kwargs):
            self._record(stage)
            return run(*args, **kwargs)
        setattr(model, method, recorded)

    def _record(self, stage):
        where = {k: self.pipe.residency.where(m) for k, m in self.models.items()}
        on_device = sorted(k for k, w in where.items() if w == "device")
        if not self.events or self.events[-1] != (stage, on_device):
            self.events.append((stage, on_device))


def generate(pipe):
    return pipe.generate("a red fox", image=torch.rand(1, 3, 16, 16), width=32, height=16,
                         frames=5, steps=3, boundary=0.95, seed=1)


def test_each_model_is_on_the_device_only_while_its_stage_runs(a14b_i2v):
    """Encoders and the VAE come to the device for their stage and leave it; the A14B experts
    take turns (the high-noise one is parked when the low-noise one starts); the DiT that ran
    last stays on the device for the next run."""
    pipe = WanPipeline(**a14b_i2v, residency=Residency("cpu", OFFLOAD))
    timeline = Timeline(pipe)
    video = generate(pipe)
    assert video.shape == (1, 5, 16, 32, 3) and torch.isfinite(video).all()
    assert timeline.events == [
        ("text encode", ["high", "low", "text_encoder"]),
        ("image encode", ["high", "low", "vae"]),
        ("sample high", ["high"]),  # the low-noise expert parked while the high one runs
        ("sample low", ["low"]),
        ("decode", ["low", "vae"]),
    ]
    assert pipe.residency.moves == [
        ("park", "text encoder", OFFLOAD), ("park", "VAE", OFFLOAD),  # registered
        ("load", "text encoder", "cpu"), ("park", "text encoder", OFFLOAD),
        ("load", "VAE", "cpu"), ("park", "VAE", OFFLOAD),
        ("park", "low-noise expert", OFFLOAD),
        ("park", "high-noise expert", OFFLOAD), ("load", "low-noise expert", "cpu"),
        ("load", "VAE", "cpu"), ("park", "VAE", OFFLOAD),
    ]
    assert pipe.residency.resident() == [
        ("low-noise expert", pipe.residency.device_bytes(pipe.low_noise_dit))]


@pytest.fixture
def on_cuda_platform(monkeypatch):
    """The platform policy of a CUDA machine (fused Triton layers), with Triton refusing CPU
    tensors as it does there (no interpreter)."""
    from wanrt.kernels import platforms, triton_ops
    monkeypatch.setenv("WANRT_PLATFORM", "cuda")
    monkeypatch.setattr(triton_ops, "_INTERPRET", False)
    platforms._platform_for.cache_clear()
    yield
    platforms._platform_for.cache_clear()


def test_a_text_encoder_computing_on_the_cpu_of_a_cuda_machine_runs_torch_layers(
        tiny_models, on_cuda_platform):
    """``on_cpu``: loaded there (the loader binds for its device) or built for the GPU and
    registered (the policy binds it for the offload device), it encodes with the CPU's layers."""
    path = tiny_models / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    loaded = load_text_encoder(path, dtype=F32, device="cpu")
    assert set(implementation_report(loaded.model).values()) == {"native"}

    built_for_gpu = load_text_encoder(path, dtype=F32, device="cpu")
    bind_layers(built_for_gpu.model, RuntimeOptions(platform="cuda"))
    assert set(implementation_report(built_for_gpu.model).values()) == {"triton"}
    with pytest.raises(ValueError, match="needs GPU tensors"):
        built_for_gpu.encode(["a red fox"])  # what the GPU kernels do with CPU tensors
    residency = Residency("cuda:0", on_cpu=("text_encoder",))
    residency.register(built_for_gpu.model, "text_encoder")
    assert set(implementation_report(built_for_gpu.model).values()) == {"native"}
    torch.testing.assert_close(built_for_gpu.encode(["a red fox"]), loaded.encode(["a red fox"]))


def test_a_diffusion_model_loaded_to_the_cpu_for_the_gpu_runs_the_gpus_layers(
        tiny_models, on_cuda_platform):
    """The WanRT loader loads a DiT to the offload device (the sampler brings it over): the
    policy binds its layers for the GPU it samples on, not for the CPU it was loaded to."""
    dit = load_dit(tiny_models / "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", dtype=F32,
                   device="cpu")
    assert set(implementation_report(dit).values()) == {"native"}
    Residency("cuda:0").register(dit, "dit")
    assert set(implementation_report(dit).values()) == {"triton"}


def test_the_node_loaders_put_encoders_in_cpu_memory_in_their_gpu_dtype_and_layout(
        tiny_models, on_cuda_platform, monkeypatch):
    """On a GPU machine the text encoder, CLIP and VAE wait in CPU memory between their stages:
    they are loaded there (a card smaller than UMT5-XXL never holds it whole), already in the
    GPU's dtype (bf16 / fp16) and layout (channels-last VAE convs), their layers bound for the
    GPU they will run on."""
    from wanrt.nodes import host as hosts
    from wanrt.nodes.loaders import WanRTLoadCLIPVision, WanRTLoadTextEncoder, WanRTLoadVAE

    h = HeadlessHost.from_paths(tiny_models, show_progress=False)
    residency = Residency("cuda:0")
    monkeypatch.setattr(h, "residency", lambda: residency)
    with hosts.activate(h):
        (te,) = WanRTLoadTextEncoder().load("umt5_xxl_fp8_e4m3fn_scaled.safetensors")
        (clip,) = WanRTLoadCLIPVision().load("clip_vision_h.safetensors")
        (vae,) = WanRTLoadVAE().load("wan_2.1_vae.safetensors")
    for model in (te.model, clip, vae):
        assert residency.where(model) == "offload"
        assert {t.device.type for t in model.parameters()} == {"cpu"}
    assert {p.dtype for p in te.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in clip.parameters() if p.is_floating_point()} == {torch.float16}
    conv = next(m for m in vae.modules() if isinstance(m, nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert "triton" in set(implementation_report(te.model).values())


def test_parked_tensors_share_one_host_buffer_and_keep_their_layout():
    """What a park to CPU memory makes (unpinned here: no CUDA): one buffer for all dense
    tensors (page-locked allocations round up to a power of two each), every value and stride
    kept (a channels-last conv stays channels-last for its way back); a tensor with gaps in its
    memory gets a copy of its own."""
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(8, 4, 3, 3, 3, generator=g).contiguous(memory_format=torch.channels_last_3d)
    fp8 = torch.randn(5, 7, generator=g).to(torch.float8_e4m3fn)
    bias, gapped = torch.randn(3, generator=g), torch.randn(4, 6, generator=g)[:, ::2]
    tensors = [conv, fp8, bias, gapped]
    copies = residency_module.host_copies(tensors, pin=False)
    for t, c in zip(tensors, copies):
        assert c.dtype == t.dtype and torch.equal(c.float(), t.float())
    assert [c.stride() for c in copies[:3]] == [t.stride() for t in tensors[:3]]
    buffers = {c.untyped_storage().data_ptr() for c in copies[:3]}
    assert len(buffers) == 1 and copies[3].untyped_storage().data_ptr() not in buffers
    assert copies[3].is_contiguous()  # a copy of its own, compacted


def test_a_load_that_runs_out_of_memory_half_way_leaves_the_model_where_it_was(monkeypatch):
    """All or nothing: the move to the device fails part way (the tensors copied so far hold
    device memory), so the model is moved back to the offload device, stays parked, and the
    next load moves it whole."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    residency = Residency(OFFLOAD, "cpu")  # cpu:1 computes here
    residency.register(model, "vae")
    moves = []
    move = residency_module.move_module

    def failing_on_the_device(module, device, skip=()):
        moves.append(str(device))
        if str(device) == OFFLOAD and len(moves) == 1:
            move(module[0], device)  # half of it made it over
            raise torch.OutOfMemoryError("CUDA out of memory")
        move(module, device, skip)
    monkeypatch.setattr(residency_module, "move_module", failing_on_the_device)
    with pytest.raises(torch.OutOfMemoryError):
        residency.load(model)
    assert moves == [OFFLOAD, "cpu"]  # the way back
    assert residency.where(model) == "offload" and residency.moves == []
    residency.load(model)
    assert residency.where(model) == "device" and residency.moves == [("load", "VAE", OFFLOAD)]


def test_a_lora_copy_moves_itself_and_parks_with_its_base(tiny_models, monkeypatch):
    """``apply_lora`` returns a copy sharing the base's unpatched weights: loading the copy moves
    the copy (its merged weights too, not the base's originals they replace); parking moves
    every model sharing those weights."""
    base = load_dit(tiny_models / "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", dtype=F32)
    residency = Residency("cpu", OFFLOAD)
    residency.register(base, "dit")
    residency.park(base)
    lora = apply_lora(base, tiny_models / "loras/wan2.1_t2v_1.3B_style_kohya.safetensors", 1.0)
    moved = []
    move = residency_module.move_module
    monkeypatch.setattr(residency_module, "move_module", lambda module, device, skip=(): (
        moved.append((module, str(device))), move(module, device, skip)))

    residency.load(lora, "dit")
    assert [(m is lora, device) for m, device in moved] == [(True, "cpu")]
    moved.clear()
    residency.park(lora)
    assert sorted((m is lora, device) for m, device in moved) == [(False, OFFLOAD), (True, OFFLOAD)]


def test_low_vram_parks_the_diffusion_model_when_sampling_ends(a14b_i2v):
    pipe = WanPipeline(**a14b_i2v, residency=Residency("cpu", OFFLOAD, low_vram=True))
    timeline = Timeline(pipe)
    generate(pipe)
    assert timeline.events[-1] == ("decode", ["vae"])
    assert pipe.residency.resident() == []


def test_budget_parks_the_least_recently_used_model_first():
    """Three 4 KiB models under an 8 KiB budget: loading the third parks the oldest one."""
    res = Residency("cpu", OFFLOAD, budget_bytes=8 << 10, park_experts=False)
    models = {name: nn.Linear(32, 32, bias=False) for name in "abc"}
    for name, model in models.items():
        res.register(model, "dit", name)
        model.to(OFFLOAD)
    for name in "ab":
        res.load(models[name])
    res.load(models["a"])  # a is now the most recently used
    res.load(models["c"])
    assert sorted(label for label, _ in res.resident()) == ["a", "c"]
    assert res.resident()[0][1] == 32 * 32 * 4


def test_a_model_in_use_is_not_parked_to_make_room_for_another_of_the_same_stage():
    """Image encode uses the VAE and CLIP together: with a budget for one of them, loading CLIP
    must not park the VAE it runs beside (the stage would run the VAE off the device); the
    budget yields until the stage ends."""
    res = Residency("cpu", OFFLOAD, budget_bytes=4 << 10)
    vae, clip = nn.Linear(32, 32, bias=False), nn.Linear(32, 32, bias=False)  # 4 KiB each
    for model, role in ((vae, "vae"), (clip, "clip_vision")):
        res.register(model, role, role)
    with res.use(vae, "vae", "image encode"):
        with res.use(clip, "clip_vision", "image encode"):
            assert sorted(label for label, _ in res.resident()) == ["clip_vision", "vae"]
    assert res.resident() == []


def test_an_out_of_memory_error_names_the_stage_the_resident_models_and_what_would_fit(
        a14b_i2v):
    pipe = WanPipeline(**a14b_i2v, residency=Residency("cpu", OFFLOAD))

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    pipe.dit.blocks[0].register_forward_pre_hook(out_of_memory)
    with pytest.raises(StageOutOfMemoryError) as caught:
        generate(pipe)
    message = str(caught.value)
    assert "during sampling" in message
    assert "high-noise expert" in message and "GiB" in message
    blocks = len(pipe.dit.blocks)
    assert f"blocks_to_swap={blocks} of {blocks}" in message  # 2 GiB short: every tiny block
    assert "low_vram" in message
    assert isinstance(caught.value, torch.OutOfMemoryError)  # still an OOM for callers


def test_an_out_of_memory_error_in_the_decode_lists_the_vae_it_ran_out_with(a14b_i2v):
    pipe = WanPipeline(**a14b_i2v, residency=Residency("cpu", OFFLOAD))

    def out_of_memory(*_, **__):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    pipe.vae.decode = out_of_memory
    with pytest.raises(StageOutOfMemoryError, match=r"decode\. WanRT models resident there: .*VAE"):
        generate(pipe)


@pytest.mark.parametrize("command", ["run", "serve"])
def test_the_memory_flags_of_run_and_serve_configure_the_hosts_one_policy(command):
    from wanrt.server.cli import add_arguments as add_serve_arguments

    parser = argparse.ArgumentParser()
    (add_arguments if command == "run" else add_serve_arguments)(parser)
    workflow = ["w.json"] if command == "run" else []
    args = parser.parse_args(workflow + ["--low-vram", "--text-encoder-on-cpu", "--vram-budget", "20"])
    host = HeadlessHost(memory=memory_options(args))
    res = host.residency()
    assert res is host.residency()  # one policy, one budget, for every node of the process
    assert res.low_vram and res.on_cpu == ("text_encoder",) and res.budget_bytes == 20 << 30
    assert res.compute_device("text_encoder") == res.offload_device
