"""Every pipeline end to end on ``make-tiny`` checkpoints: real loaders, real files, CPU, fp32."""

import pytest
import torch

from wanrt.wan_core import load_clip_vision, load_dit, load_text_encoder, load_vae
from wanrt.wan_core.pipelines import WanPipeline
from wanrt.wan_core.video_io import read_video, save_video

F32 = torch.float32


@pytest.fixture(scope="module")
def parts(tiny_models):
    def dit(name):
        return load_dit(tiny_models / "diffusion_models" / name, dtype=F32)

    return {
        "dit": dit,
        "te": load_text_encoder(tiny_models / "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", dtype=F32),
        "vae21": load_vae(tiny_models / "vae/wan_2.1_vae.safetensors", dtype=F32),
        "vae22": load_vae(tiny_models / "vae/wan2.2_vae.safetensors", dtype=F32),
        "clip": load_clip_vision(tiny_models / "clip_vision/clip_vision_h.safetensors", dtype=F32),
    }


# (task, DiT file, low-noise DiT file, VAE, uses CLIP, images)
CASES = {
    "t2v-1.3B": ("wan2.1_t2v_1.3B_fp16.safetensors", None, "vae21", False, 0),
    "t2v-14B": ("wan2.1_t2v_14B_fp8_e4m3fn.safetensors", None, "vae21", False, 0),
    "i2v-14B": ("wan2.1_i2v_480p_14B_fp8_scaled.safetensors", None, "vae21", True, 1),
    "flf2v-14B": ("wan2.1_flf2v_720p_14B_fp16.safetensors", None, "vae21", True, 2),
    "ti2v-5B": ("wan2.2_ti2v_5B_fp16.safetensors", None, "vae22", False, 0),
    "ti2v-5B+image": ("wan2.2_ti2v_5B_fp16.safetensors", None, "vae22", False, 1),
    "t2v-A14B": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                 "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "vae21", False, 0),
    "i2v-A14B": ("wan2.2_i2v_high_noise_14B_fp16.safetensors",
                 "wan2.2_i2v_low_noise_14B_fp16.safetensors", "vae21", False, 1),
}


def make_pipeline(parts, case):
    dit, low, vae, clip, _ = CASES[case]
    return WanPipeline(parts["dit"](dit), parts[vae], parts["te"], parts["clip"] if clip else None,
                       parts["dit"](low) if low else None)


def run(pipe, images, seed, **kw):
    step = 2 * pipe.vae.spatial_compression
    gen = torch.Generator().manual_seed(7)
    picture = [torch.rand(1, 3, 24, 40, generator=gen) for _ in range(images)]
    return pipe.generate("a red fox runs through snow", image=picture[0] if images else None,
                         end_image=picture[1] if images == 2 else None, width=2 * step,
                         height=step, frames=5, steps=3, seed=seed, **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_makes_a_deterministic_video(parts, case, tmp_path):
    pipe = make_pipeline(parts, case)
    # Tiny DiTs all have the 1.3B-or-smaller width, so a tiny "14B" T2V reads as the 1.3B task.
    assert pipe.task == {"t2v-14B": "t2v-1.3B"}.get(case, case.split("+")[0])
    step = 2 * pipe.vae.spatial_compression
    video = run(pipe, CASES[case][4], seed=3)
    assert video.shape == (1, 5, step, 2 * step, 3)
    assert video.min() >= 0 and video.max() <= 1 and video.std() > 0
    assert torch.equal(video, run(pipe, CASES[case][4], seed=3)), "same seed, same video"
    assert not torch.equal(video, run(pipe, CASES[case][4], seed=4)), "seed changes the video"

    [saved] = save_video(video[0], tmp_path, "wan", format="mp4", fps=16)
    frames = read_video(saved.path)
    assert frames.shape == (5, step, 2 * step, 3)


def test_progress_callback_sees_every_step(parts):
    pipe = make_pipeline(parts, "t2v-1.3B")
    seen = []
    run(pipe, 0, seed=1, callback=lambda i, n, x0: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_interrupt_stops_generation(parts):
    pipe = make_pipeline(parts, "t2v-1.3B")

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop

    with pytest.raises(Stop):
        run(pipe, 0, seed=1, interrupt=interrupt)


@pytest.mark.parametrize("case, kwargs, message", [
    ("t2v-1.3B", {"frames": 6}, r"frames=6 is not 4n\+1 \(nearest valid: 5 or 9\)"),
    ("t2v-1.3B", {"width": 40}, r"width=40 is not a multiple of 16"),
    ("ti2v-5B", {"width": 48}, r"width=48 is not a multiple of 32"),
    ("t2v-1.3B", {"image": torch.rand(1, 3, 8, 8)}, "text-to-video only"),
    ("i2v-14B", {}, "needs a start image"),
    ("t2v-1.3B", {"prompt": "  "}, "prompt is empty"),
])
def test_bad_requests_are_rejected_before_sampling(parts, case, kwargs, message):
    pipe = make_pipeline(parts, case)
    args = {"prompt": "a fox", "width": 32, "height": 32, "frames": 5, "steps": 2, **kwargs}
    if pipe.vae.spatial_compression == 16:
        args.setdefault("height", 64)
    with pytest.raises(ValueError, match=message):
        pipe.generate(args.pop("prompt"), **args)


def test_i2v_without_clip_vision_names_the_missing_model(parts):
    pipe = make_pipeline(parts, "i2v-14B")
    pipe.clip_vision = None
    with pytest.raises(ValueError, match="CLIP vision"):
        run(pipe, 1, seed=0)
