"""WanRT's nodes: interfaces ComfyUI accepts, behaviour on make-tiny models, and one graph run
through the nodes inside a stub ComfyUI (fake folder_paths, comfy.utils, comfy.model_management)."""

import functools
import importlib
import inspect
import os
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from comfy_stub import StubInterrupt, install_comfy
from PIL import Image

import wanrt
from wanrt.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from wanrt.nodes.host import EXAMPLE_INPUT_DIR, HeadlessHost
from wanrt.nodes.latents import CONDITION_KEY, validate_size
from wanrt.wan_core.compile import compile_summary
from wanrt.wan_core.prompts import NEGATIVE_PROMPT
from wanrt.wan_core.video_io import read_metadata, read_video

CORE_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "IMAGE", "LATENT", "MODEL"}
OPTION_KEYS = {"default", "min", "max", "step", "round", "tooltip", "multiline", "dynamicPrompts",
               "control_after_generate", "image_upload", "forceInput"}
T2V, I2V = "wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_i2v_480p_14B_fp16.safetensors"


def call(name, nodes=NODE_CLASS_MAPPINGS, **inputs):
    """Run node ``name`` as ComfyUI does: VALIDATE_INPUTS on its constant inputs, then FUNCTION."""
    cls = nodes[name]
    if hasattr(cls, "VALIDATE_INPUTS"):
        params = inspect.signature(cls.VALIDATE_INPUTS).parameters
        assert cls.VALIDATE_INPUTS(**{k: v for k, v in inputs.items() if k in params}) is True
    return getattr(cls(), cls.FUNCTION)(**inputs)


@pytest.fixture(scope="module")
def tiny_host(tiny_models, tmp_path_factory):
    """A quiet headless host on the tiny models, output in a temp folder."""
    return HeadlessHost.from_paths(tiny_models, output_dir=tmp_path_factory.mktemp("output"),
                                   show_progress=False)


@pytest.fixture
def active(tiny_host):
    """``tiny_host`` is what ``host.current()`` returns during the test."""
    with host.activate(tiny_host):
        yield tiny_host


@pytest.fixture(scope="module")
def models(tiny_host):
    def dit(name):
        return call("WanRTLoadDiffusionModel", model_name=name, weight_dtype="default", attention="auto")[0]

    with host.activate(tiny_host):
        return types.SimpleNamespace(
            t2v=dit(T2V), i2v=dit(I2V),
            text_encoder=call("WanRTLoadTextEncoder",
                              text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors")[0],
            vae=call("WanRTLoadVAE", vae_name="wan_2.1_vae.safetensors")[0],
            vae22=call("WanRTLoadVAE", vae_name="wan2.2_vae.safetensors")[0],
            clip=call("WanRTLoadCLIPVision", clip_vision_name="clip_vision_h.safetensors")[0])


@pytest.fixture(scope="module")
def conditioning(models):
    return call("WanRTTextEncode", text_encoder=models.text_encoder, positive="a fox in the snow",
                negative="")[0]


def sampler_inputs(model, conditioning, latent, **changes):
    return {"model": model, "conditioning": conditioning, "latent": latent, "seed": 1, "steps": 2,
            "cfg": 5.0, "shift": 5.0, "sampler": "unipc", **changes}


# --- interfaces ----------------------------------------------------------------------------------

def test_the_node_set():
    assert sorted(NODE_CLASS_MAPPINGS) == sorted([
        "WanRTLoadDiffusionModel", "WanRTLoadTextEncoder", "WanRTLoadVAE", "WanRTLoadCLIPVision",
        "WanRTLoadLoRA", "WanRTCompile", "WanRTStepCache", "WanRTStepCacheModel", "WanRTTextEncode",
        "WanRTEmptyLatentVideo", "WanRTImageToVideo", "WanRTSampler", "WanRTVAEDecode", "WanRTLoadImage",
        "WanRTSaveVideo", "WanRTAccelerate"])
    assert wanrt.NODE_CLASS_MAPPINGS is NODE_CLASS_MAPPINGS
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)


def known_type(type_) -> bool:
    return type_ in CORE_TYPES or type_.startswith("WANRT_")


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_interface_is_valid_for_comfyui(name, active):
    cls = NODE_CLASS_MAPPINGS[name]
    assert cls.CATEGORY.split("/")[0] == "WanRT" and cls.DESCRIPTION.strip()
    assert callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple) and all(known_type(t) for t in cls.RETURN_TYPES)
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
        assert len(getattr(cls, attr, cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert cls.RETURN_TYPES or getattr(cls, "OUTPUT_NODE", False), "a node without outputs must be an output node"
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    assert set(spec.get("hidden", {}).values()) <= {"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID"}
    inputs = {**spec["required"], **spec.get("optional", {})}
    for input_name, (type_, options) in inputs.items():
        where = f"{name}.{input_name}"
        assert set(options) <= OPTION_KEYS, where
        assert options.get("tooltip", "").strip(), f"{where} has no tooltip"
        if isinstance(type_, list):
            assert type_, f"{where}: empty combo"
            assert options.get("default", type_[0]) in type_, where
            continue
        assert known_type(type_), where
        if "default" in options:
            default = options["default"]
            assert isinstance(default, {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}[type_]), where
            assert options.get("min", default) <= default <= options.get("max", default), where
            if type_ == "INT" and "step" in options:
                assert (default - options["min"]) % options["step"] == 0, where
    signature = inspect.signature(getattr(cls, "VALIDATE_INPUTS", lambda: True)).parameters
    assert set(signature) - set(inputs) <= {"upstream"}, f"{name}.VALIDATE_INPUTS takes unknown inputs"
    if "upstream" in signature:  # WanRT's runner passes it; ComfyUI never does, so it needs a default
        assert signature["upstream"].default is None, name
    assert set(inspect.signature(getattr(cls, cls.FUNCTION)).parameters) - {"self"} == \
        set(inputs) | set(spec.get("hidden", {}))


def test_size_rules_are_checked_before_work_and_linked_values_later():
    assert validate_size(832, 480, 81) is True
    assert validate_size(None, None, None) is True  # linked: checked when the node runs
    assert "frames=80 is not 4n+1" in validate_size(None, 480, 80)
    assert "width=100 is not a multiple of 16" in validate_size(100, None, 81)
    assert validate_size(832, 480, 99999) == "length=99999 is outside 1..16384"


def test_text_encode_fills_in_wans_negative_prompt_and_needs_a_positive_one():
    encode = NODE_CLASS_MAPPINGS["WanRTTextEncode"]
    assert encode.INPUT_TYPES()["required"]["negative"][1]["default"] == NEGATIVE_PROMPT
    assert encode.VALIDATE_INPUTS(positive=" ") == "the positive prompt is empty: describe the video to generate"
    assert encode.VALIDATE_INPUTS(positive=None) is True


# --- behaviour on make-tiny models ---------------------------------------------------------------

def test_empty_latent_follows_the_vae(models):
    latent = call("WanRTEmptyLatentVideo", vae=models.vae, width=64, height=32, length=9, batch_size=2)[0]
    assert latent["samples"].shape == (2, 16, 3, 4, 8) and not latent["samples"].any()
    latent = call("WanRTEmptyLatentVideo", vae=models.vae22, width=64, height=32, length=9, batch_size=1)[0]
    assert latent["samples"].shape == (1, 48, 3, 2, 4)
    with pytest.raises(ValueError, match="width=48 is not a multiple of 32"):
        call("WanRTEmptyLatentVideo", vae=models.vae22, width=48, height=32, length=9, batch_size=1)


def test_image_to_video_takes_a_core_load_image_output(models, conditioning, active):
    image = torch.rand(1, 40, 56, 4)  # ComfyUI LoadImage: [1, H, W, C] float in [0, 1] (RGBA too)
    latent = call("WanRTImageToVideo", model=models.i2v, vae=models.vae, width=32, height=16, length=5,
                  batch_size=2, start_image=image, clip_vision=models.clip)[0]
    condition = latent[CONDITION_KEY]
    assert latent["samples"].shape == (2, 16, 2, 2, 4)
    assert condition.y.shape == (2, 4 + 16, 2, 2, 4) and condition.clip_fea.shape[0] == 2
    out = call("WanRTSampler", **sampler_inputs(models.i2v, conditioning, latent))[0]
    assert out["samples"].shape == latent["samples"].shape and out[CONDITION_KEY] is condition


def test_image_to_video_rejects_a_mismatched_image_batch(models):
    with pytest.raises(ValueError, match="start_image holds 3 images; give 1 .* or batch_size=2"):
        call("WanRTImageToVideo", model=models.i2v, vae=models.vae, width=32, height=16, length=5,
             batch_size=2, start_image=torch.rand(3, 16, 32, 3), clip_vision=models.clip)


def test_sampler_says_which_latent_an_i2v_model_needs(models, conditioning):
    empty = call("WanRTEmptyLatentVideo", vae=models.vae, width=32, height=16, length=5, batch_size=1)[0]
    with pytest.raises(ValueError, match="build its latent with WanRT Image To Video"):
        call("WanRTSampler", **sampler_inputs(models.i2v, conditioning, empty))


def test_denoise_below_one_starts_from_the_input_latent(models, conditioning, active):
    def run(start, denoise):
        latent = {"samples": torch.full((1, 16, 2, 2, 4), start)}
        return call("WanRTSampler", **sampler_inputs(models.t2v, conditioning, latent, steps=4,
                                                     denoise=denoise))[0]["samples"]

    assert torch.equal(run(0.0, 1.0), run(1.0, 1.0)), "full denoise ignores the input latent"
    assert not torch.equal(run(0.0, 0.5), run(1.0, 0.5)), "partial denoise starts from it"


def test_vae_decode_flattens_the_batch_into_frames(models):
    latent = torch.randn(2, 16, 2, 2, 4, generator=torch.Generator().manual_seed(0))
    images = call("WanRTVAEDecode", vae=models.vae, latent={"samples": latent}, tiled=False)[0]
    # What core SaveImage / CreateVideo expect: float32 [N, H, W, 3] on the CPU, in [0, 1].
    assert images.shape == (2 * 5, 16, 32, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0 <= images.min() and images.max() <= 1
    second = call("WanRTVAEDecode", vae=models.vae, latent={"samples": latent[1:]}, tiled=False)[0]
    assert torch.equal(images[5:], second), "video 1's frames follow video 0's"


def test_compile_works_on_a_copy_that_shares_the_weights(models):
    model = models.t2v
    compiled, info = call("WanRTCompile", model=model, mode="blocks", backend="eager",
                          inductor_mode="default", dynamic="auto")["result"]
    assert info == compile_summary("blocks") + "; attention auto"
    assert compiled is not model and compiled.blocks[0] is not model.blocks[0]
    assert all(a is b for a, b in zip(compiled.parameters(), model.parameters()))
    assert compiled.blocks[0]._compiled_call_impl is not None
    assert model.blocks[0]._compiled_call_impl is None, "the loader's cached model stays as loaded"
    x, t = torch.randn(1, model.config.in_dim, 2, 2, 4), torch.tensor([500.0])
    context = torch.randn(1, 8, model.config.text_dim)
    torch.testing.assert_close(compiled(x, t, context), model(x, t, context), rtol=0, atol=0)


def test_compile_node_selects_8bit_attention_with_dense_exclusions(models):
    """The attention inputs build the plan of the copy; the loader's model keeps its own."""
    compiled, info = call("WanRTCompile", model=models.t2v, mode="off", backend="eager",
                          inductor_mode="default", dynamic="auto", attention="sage8",
                          dense_first_blocks=1, dense_first_steps=2, dense_last_steps=1)["result"]
    assert info.endswith("; attention sage8 (dense auto: first 1 blocks, first 2 / last 1 steps)")
    assert [b.self_attn.backend for b in compiled.blocks] == ["auto", "sage8"]
    assert {b.cross_attn.backend for b in compiled.blocks} == {"auto"}
    compiled.set_sampling_step(1, 10)
    assert {b.self_attn.backend for b in compiled.blocks} == {"auto"}
    assert {b.self_attn.backend for b in models.t2v.blocks} == {"auto"}


def test_load_image_reads_the_input_folder(tmp_path):
    folder = tmp_path / "input"
    folder.mkdir()
    Image.fromarray(np.full((6, 10, 4), 255, np.uint8)).save(folder / "white.png")
    load = NODE_CLASS_MAPPINGS["WanRTLoadImage"]
    with host.activate(HeadlessHost(input_dir=folder)):
        assert load.INPUT_TYPES()["required"]["image"][0] == ["white.png"]
        (image,) = call("WanRTLoadImage", image="white.png")
        assert image.shape == (1, 6, 10, 3) and image.dtype == torch.float32 and torch.all(image == 1)
        before = load.IS_CHANGED(image="white.png")
        Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(folder / "white.png")
        assert load.IS_CHANGED(image="white.png") != before, "an edited image is loaded again"
        assert load.VALIDATE_INPUTS(image="../secret.png") == (
            f"image '../secret.png' is not in the input folder {folder} (images there: white.png)")


def test_headless_input_folder_defaults_to_the_example_images():
    assert HeadlessHost().input_dir() == EXAMPLE_INPUT_DIR
    with host.activate(HeadlessHost()):
        assert NODE_CLASS_MAPPINGS["WanRTLoadImage"].INPUT_TYPES()["required"]["image"][0] == [
            "hills_day.png", "hills_night.png"]


@pytest.mark.parametrize("format", ["webp", "gif"])
def test_save_video_writes_animated_images(format, tmp_path):
    frames = torch.rand(3, 16, 24, 3)
    with host.activate(HeadlessHost(output_dir=tmp_path)):
        out = call("WanRTSaveVideo", images=frames, filename_prefix="clips/wan", format=format, fps=8.0,
                   quality=90, crf=19, prompt={"1": {}}, extra_pnginfo=None)
    assert out == {"ui": {"images": [{"filename": f"wan_00001_.{format}", "subfolder": "clips",
                                      "type": "output"}], "animated": [True]}}
    assert read_video(tmp_path / "clips" / f"wan_00001_.{format}").shape == (3, 16, 24, 3)


@pytest.mark.parametrize("prefix", ["../up", "/abs/path", "a/../../up"])
def test_save_video_rejects_prefixes_leaving_the_output_folder(prefix):
    message = NODE_CLASS_MAPPINGS["WanRTSaveVideo"].VALIDATE_INPUTS(filename_prefix=prefix)
    assert "must be a relative path inside the output directory" in message


# --- inside a stub ComfyUI -----------------------------------------------------------------------

@pytest.fixture
def comfy(tiny_models, tmp_path, monkeypatch):
    """Fake ComfyUI modules over the tiny models; ``log`` records progress and holds the
    interrupt flag."""
    log = types.SimpleNamespace(progress=[], interrupted=False)
    folders = {name: [str(tiny_models / name)]
               for name in ("diffusion_models", "text_encoders", "vae", "clip_vision")}
    (tmp_path / "input").mkdir()
    shutil.copy(os.path.join(EXAMPLE_INPUT_DIR, "hills_day.png"), tmp_path / "input")

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_folder_paths = lambda name: folders[name]
    folder_paths.get_filename_list = lambda name: sorted(os.listdir(folders[name][0]))
    folder_paths.get_full_path = lambda name, filename: (
        path if os.path.isfile(path := os.path.join(folders[name][0], filename)) else None)
    folder_paths.get_output_directory = lambda: str(tmp_path / "output")
    folder_paths.get_input_directory = lambda: str(tmp_path / "input")
    folder_paths.get_temp_directory = lambda: str(tmp_path / "temp")

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            mm.throw_exception_if_processing_interrupted()  # as ComfyUI's progress hook does
            log.progress.append((value, total or self.total))

    mm = install_comfy(monkeypatch, log, folder_paths=folder_paths, progress_bar=ProgressBar,
                       device=torch.device("cpu"), offload_device=torch.device("cpu"))
    return log


def test_a_node_graph_runs_inside_comfyui(comfy, tmp_path, monkeypatch):
    # Import the root package afresh, as ComfyUI does with its own modules loaded (the core
    # packages it builds on stay imported: they are not ComfyUI-specific).
    for name in [m for m in sys.modules if m == "wanrt" or m.startswith("wanrt.nodes")]:
        monkeypatch.delitem(sys.modules, name)
    root = importlib.import_module("wanrt")
    nodes = root.NODE_CLASS_MAPPINGS
    assert isinstance(root.nodes.host.current(), root.nodes.host.ComfyHost)
    assert T2V in nodes["WanRTLoadDiffusionModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert nodes["WanRTLoadImage"].INPUT_TYPES()["required"]["image"][0] == ["hills_day.png"]

    run = functools.partial(call, nodes=nodes)
    model = run("WanRTLoadDiffusionModel", model_name=T2V, weight_dtype="default", attention="auto")[0]
    text_encoder = run("WanRTLoadTextEncoder", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors")[0]
    vae = run("WanRTLoadVAE", vae_name="wan_2.1_vae.safetensors")[0]
    conditioning = run("WanRTTextEncode", text_encoder=text_encoder, positive="a fox", negative="")[0]
    empty = run("WanRTEmptyLatentVideo", vae=vae, width=32, height=16, length=5, batch_size=1)[0]
    inputs = sampler_inputs(model, conditioning, empty, steps=3)
    latent = run("WanRTSampler", **inputs)[0]
    assert comfy.progress == [(1, 3), (2, 3), (3, 3)]
    images = run("WanRTVAEDecode", vae=vae, latent=latent, tiled=False)[0]
    assert comfy.progress[3:] == [(1, 2), (2, 2)]  # decode reports each of the 2 latent frames
    out = run("WanRTSaveVideo", images=images, filename_prefix="video/WanRT", format="mp4", fps=16.0,
               quality=90, crf=19, prompt={"7": {"class_type": "WanRTSampler"}},
               extra_pnginfo={"workflow": {"version": 0.4}})
    assert out["ui"] == {"images": [{"filename": "WanRT_00001_.mp4", "subfolder": "video", "type": "output"}],
                         "animated": [True]}
    saved = tmp_path / "output" / "video" / "WanRT_00001_.mp4"
    assert read_video(saved).shape == (5, 16, 32, 3)
    assert read_metadata(saved) == {"prompt": {"7": {"class_type": "WanRTSampler"}},
                                    "workflow": {"version": 0.4}}

    comfy.interrupted = True  # ComfyUI's interrupt stops the sampler at its next step
    with pytest.raises(StubInterrupt):
        run("WanRTSampler", **inputs)


def test_step_cache_node_attaches_a_policy_and_the_sampler_reports_the_forwards(
        models, conditioning, active):
    """The node works on a copy that shares the weights; the sampler then reports forwards run
    and skipped per expert. Tiny models have no published TeaCache / MagCache constants: the
    error says what to use instead, and naming the constants works."""
    model = models.t2v
    cached, info = call("WanRTStepCache", model=model, policy="first_block", threshold=10.0,
                        start_percent=0.0, end_percent=1.0, retention=0.2, constants="auto",
                        allow_few_steps=False)["result"]
    assert cached is not model and not hasattr(model, "step_cache")
    assert all(a is b for a, b in zip(cached.parameters(), model.parameters()))
    assert info.startswith("first-block cache threshold 10")
    latent = {"samples": torch.zeros(1, 16, 2, 2, 4)}
    out = call("WanRTSampler", **sampler_inputs(cached, conditioning, latent, steps=10))
    assert out["ui"]["text"] == ["step cache: first-block cache threshold 10: "
                                 "model 2 forwards run, 18 skipped"]
    assert out["result"][0]["samples"].shape == (1, 16, 2, 2, 4)
    with pytest.raises(ValueError, match="no published constants for t2v-256d.*easycache or first_block"):
        call("WanRTStepCache", model=model, policy="teacache", threshold=0.0, start_percent=0.0,
             end_percent=1.0, retention=0.2, constants="auto", allow_few_steps=False)
    _, info = call("WanRTStepCache", model=model, policy="magcache", threshold=0.0,
                   start_percent=0.0, end_percent=1.0, retention=0.2, constants="t2v-14B",
                   allow_few_steps=False)["result"]
    assert info.startswith("magcache threshold 0.24, K 6, retention 0.2")
