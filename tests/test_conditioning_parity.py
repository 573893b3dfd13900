"""Image conditioning against references nobody here wrote: ComfyUI 0.33.0's own Wan nodes
(``WanImageToVideo``, ``WanFirstLastFrameToVideo``, ``Wan22ImageToVideoLatent``, vendored source,
through ``tests/comfyui_probes/wan_conditioning.py``), and the official Wan CLIP code
(``wan/modules/animate/clip.py`` of ``wan22``, the Wan 2.1 ``clip.py``) on the official ``.pth``.

How ComfyUI's tensors map onto ours (tiny models, CPU, fp32):

- I2V / FLF2V ``y``: ComfyUI stores the raw VAE latent of the pixel video (start image, grey
  frames, end image) as ``concat_latent_image`` and a given-frame ``concat_mask`` (0 = given);
  ``WAN21.concat_cond`` turns them into the DiT's ``y`` = ``[1 - mask as 4 channels per latent
  frame, Wan21.process_in(latent)]``. That is our ``image_to_video_condition`` output (our VAE
  returns normalised latents), compared whole.
- TI2V: ComfyUI's LATENT holds the start frame's raw latent in frame 0 and ``process_out(0)`` in
  the others, with ``noise_mask`` 0 on frame 0; as the model sees it (``Wan22.process_in``) that is
  our ``first_frame_latent`` on frame 0 and zeros elsewhere, and the mask is our per-token
  timestep 0 on frame 0 (``sampling.token_timesteps``) plus the re-imposed first frame.
- Not identical: ComfyUI resizes a start / end image of another size with bilinear (no
  antialias) + centre crop, we with antialiased bicubic + centre crop (``fit_image``); the images
  here are the target size, so neither resizes.
"""

import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import official_module
from safetensors.torch import load_file, save_file

from wanrt.wan_core import load_clip_vision, load_vae
from wanrt.wan_core.conditioning import first_frame_latent, image_to_video_condition
from wanrt.wan_core.sampling import sample, token_timesteps
from wanrt.wan_core.tiny import clip_vision as tiny_clip
from wanrt.wan_core.vae.config import LATENT_MEAN, LATENT_STD

PROBES = Path(__file__).parent / "comfyui_probes"
WIDTH, HEIGHT, LENGTH = 64, 32, 9  # 3 latent frames; 2.1 latent 4x8, 2.2 latent 2x4


@pytest.fixture(scope="module")
def comfy_conditioning(comfyui, tiny_models, tmp_path_factory):
    """The probe's tensors and the inputs it got (images as ``[1, 3, H, W]``)."""
    tmp = tmp_path_factory.mktemp("conditioning")
    g = torch.Generator().manual_seed(0)
    start, end = (torch.rand(1, HEIGHT, WIDTH, 3, generator=g) for _ in range(2))
    latent22 = torch.randn(1, 48, 1, HEIGHT // 16, WIDTH // 16, generator=g)
    save_file({"start": start, "end": end, "latent22": latent22}, str(tmp / "in.st"))
    comfyui.run(PROBES / "wan_conditioning.py", str(tiny_models / "vae" / "wan_2.1_vae.safetensors"),
                str(tmp / "in.st"), str(tmp / "out.st"), str(WIDTH), str(HEIGHT), str(LENGTH))
    return types.SimpleNamespace(start=start.movedim(-1, 1), end=end.movedim(-1, 1),
                                 latent22=latent22, **load_file(tmp / "out.st"))


@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_i2v_and_flf2v_y_equal_what_comfyuis_wan_dit_receives(comfy_conditioning, tiny_models,
                                                              task):
    """Mask channels exactly; image-latent channels within 1e-5 (ComfyUI's Wan VAE and ours,
    same fp32 weights, differ only in summation order)."""
    c = comfy_conditioning
    vae = load_vae(tiny_models / "vae" / "wan_2.1_vae.safetensors", dtype=torch.float32,
                   device="cpu")
    ours = image_to_video_condition(vae, c.start, frames=LENGTH, height=HEIGHT, width=WIDTH,
                                    end=c.end if task == "flf2v" else None)
    theirs = getattr(c, f"{task}_y")
    assert ours.shape == theirs.shape == (1, 20, 3, HEIGHT // 8, WIDTH // 8)
    assert torch.equal(ours[:, :4], theirs[:, :4])
    torch.testing.assert_close(ours[:, 4:], theirs[:, 4:], rtol=1e-5, atol=1e-5)
    assert c.i2v_latent.shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)


def test_ti2v_latent_maps_onto_our_first_frame_and_token_timesteps(comfy_conditioning):
    """The same (stub) VAE output on both sides: ComfyUI's raw latent, ours normalised with the
    official Wan 2.2 statistics; equal within fp32 rounding."""
    c = comfy_conditioning
    mean, std = (torch.tensor(s[48]).view(1, 48, 1, 1, 1) for s in (LATENT_MEAN, LATENT_STD))

    class NormalisingStub:  # what our VAE returns for a frame whose raw latent is latent22
        def encode(self, frame):
            assert frame.shape == (1, 3, 1, HEIGHT, WIDTH)
            return (c.latent22 - mean) / std

    ours = first_frame_latent(NormalisingStub(), c.start, height=HEIGHT, width=WIDTH)
    model_latent = c.ti2v_model_latent
    torch.testing.assert_close(model_latent[:, :, :1], ours, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(model_latent[:, :, 1:]) == 0
    kept = c.ti2v_noise_mask[0, 0] == 0  # [F_lat, h, w]: the latent positions ComfyUI keeps
    t = token_timesteps(torch.tensor([500.0]), model_latent.shape)
    tokens_kept = (t[0] == 0).view(3, HEIGHT // 32, WIDTH // 32)  # 2x2 patches of the 2x4 latent
    assert torch.equal(kept[:, ::2, ::2], tokens_kept)
    assert torch.equal(kept, kept[:, :1, :1].expand_as(kept))


# --- the official CLIP code on the official .pth ------------------------------------------------

def official_with_torchvision_placeholder(relpath):
    """``wan/<relpath>.py`` of the official code. The CLIP and pipeline modules import
    ``torchvision.transforms`` (CPU torch has no torchvision here): a placeholder stands in while
    they load, its one function used here ``to_tensor`` (its definition: uint8 HWC -> float CHW
    / 255). transformers and diffusers are imported first, so they never see it."""
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.to_tensor = lambda img: torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    placeholder = types.ModuleType("torchvision")
    placeholder.transforms = types.ModuleType("torchvision.transforms")
    placeholder.transforms.functional = functional
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    official_module("modules/tokenizers")
    official_module("modules/model")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(zip(names, (placeholder, placeholder.transforms, functional)))
    try:
        return official_module(relpath)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_official_clip_code_loads_the_official_pth_and_gives_our_features(tmp_path):
    """The tiny official full-CLIP ``.pth`` (``visual.*`` with fused ``to_qkv``): its visual tower
    built by the official ``VisionTransformer`` (ViT-H's settings: token pool, pre-norm, gelu) and
    run through the official ``CLIPModel.visual`` (frames in [-1, 1], bicubic to 224 here 28,
    CLIP normalisation, ``use_31_block``) equals ``load_clip_vision(pth).encode`` within 1e-5."""
    clip = official_with_torchvision_placeholder("modules/animate/clip")
    tiny_clip.write(tmp_path, seed=0)
    pth = tmp_path / "official" / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    cfg = tiny_clip.CONFIG
    tower = clip.VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, dim=cfg.dim,
        mlp_ratio=cfg.mlp_dim // cfg.dim, out_dim=tiny_clip.PROJECTION_DIM,
        num_heads=cfg.num_heads, num_layers=cfg.num_layers, pool_type="token", pre_norm=True,
        post_norm=False, activation="gelu")
    state = torch.load(pth, map_location="cpu", weights_only=True)
    tower.load_state_dict({k[len("visual."):]: v for k, v in state.items()
                           if k.startswith("visual.")})
    model = clip.CLIPModel.__new__(clip.CLIPModel)  # its __init__ builds the full-size model
    model.dtype = torch.float32
    model.model = types.SimpleNamespace(image_size=cfg.image_size, visual=tower.eval())
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)  # official _clip()
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    model.transforms = types.SimpleNamespace(transforms=[lambda x: (x - mean) / std])

    images = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its torch.cuda.amp.autocast, deprecated and CPU-less
        theirs = model.visual([image[:, None] * 2 - 1 for image in images])  # [3, T=1, H, W] each
    ours = load_clip_vision(pth, device="cpu").encode(images)
    assert theirs.shape == ours.shape == (2, 5, cfg.dim)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# --- the official wan22 pipelines: conditioning, first-frame re-imposition, expert switch --------

class Recorder(torch.nn.Module):
    """A stand-in DiT, ``v = a·x − 0.1 + mean(context) + 0.05·mean(y)`` (y: the I2V
    conditioning), that records what it is given; ``official=True`` takes the official
    list-of-samples call."""

    def __init__(self, a, official):
        super().__init__()
        self.a, self.official, self.calls = a, official, []
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the official code asks its device

    def forward(self, x, t, context=None, clip_fea=None, y=None, seq_len=None):
        if self.official:
            x, context = x[0][None], context[0][None]
            y = y[0][None] if y is not None else None
        self.calls.append({"x": x.clone(), "t": t.clone(), "y": y})
        v = self.a * x - 0.1 + context.mean((1, 2)).view(-1, 1, 1, 1, 1)
        if y is not None:
            v = v + 0.05 * y.mean(1, keepdim=True)
        return [v[0]] if self.official else v


class OfficialVAE:
    """Our VAE behind the official wrapper's interface (lists of ``[C, T, H, W]``)."""

    def __init__(self, vae):
        self.vae, self.model, self.decoded = vae, types.SimpleNamespace(z_dim=vae.z_dim), None

    def encode(self, videos):
        return [self.vae.encode(v[None])[0] for v in videos]

    def decode(self, latents):
        self.decoded = latents[0]
        return latents


def official_pipeline(cls, vae, **attrs):
    """An official pipeline object without its ``__init__`` (which loads full-size models)."""
    pipe = cls.__new__(cls)
    contexts = {prompt: torch.randn(6, 64, generator=torch.Generator().manual_seed(seed))
                for seed, prompt in enumerate(("a fox", "blurry"))}
    pipe.__dict__.update(device=torch.device("cpu"), patch_size=(1, 2, 2), sp_size=1, rank=0,
                         vae=OfficialVAE(vae), t5_cpu=True, num_train_timesteps=1000,
                         text_encoder=lambda prompts, device: [contexts[prompts[0]]],
                         sample_neg_prompt="blurry", param_dtype=torch.float32,
                         init_on_cpu=False, **attrs)
    return pipe, contexts["a fox"][None], contexts["blurry"][None]


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # its autocast("cuda") on CPU
@pytest.mark.parametrize("task", ["ti2v", "i2v_a14b"])
def test_official_pipeline_conditions_and_samples_like_ours(tiny_models, task):
    """The official ``WanTI2V.i2v`` / ``WanI2V.generate`` (2 / 4 UniPC steps, shift 5, guidance
    5, stand-in DiTs) against ``sampling.sample`` with our conditioning: the same ``y``, per-token
    timesteps (TI2V: 0 on the clean first frame), expert per step (A14B: boundary 0.9) and final
    latent with the first frame re-imposed; within 1e-5 (the VAE encode, same weights)."""
    image = (torch.rand(HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(1)) * 255).byte()
    start = image.permute(2, 0, 1)[None].float() / 255
    pil = Image.fromarray(image.numpy())
    if task == "ti2v":
        vae = load_vae(tiny_models / "vae" / "wan2.2_vae.safetensors", dtype=torch.float32,
                       device="cpu")
        module = official_with_torchvision_placeholder("textimage2video")
        official, context, negative = official_pipeline(module.WanTI2V, vae, vae_stride=(4, 16, 16),
                                              model=Recorder(0.3, official=True))
        experts = [official.model]
        official.i2v("a fox", pil, max_area=HEIGHT * WIDTH, frame_num=LENGTH, shift=5.0,
                     sampling_steps=2, guide_scale=5.0, seed=7, offload_model=False)
        condition = {"first_frame": first_frame_latent(vae, start, height=HEIGHT, width=WIDTH)}
        models, steps = {"model": Recorder(0.3, official=False)}, 2
    else:
        vae = load_vae(tiny_models / "vae" / "wan_2.1_vae.safetensors", dtype=torch.float32,
                       device="cpu")
        module = official_with_torchvision_placeholder("image2video")
        official, context, negative = official_pipeline(
            module.WanI2V, vae, vae_stride=(4, 8, 8), boundary=0.9,
            lightning=False,  # upstream's guided path; this PyPI build's default skips guidance
            high_noise_model=Recorder(0.3, official=True),
            low_noise_model=Recorder(-0.2, official=True))
        experts = [official.high_noise_model, official.low_noise_model]
        official.generate("a fox", pil, max_area=HEIGHT * WIDTH,
                          frame_num=LENGTH, shift=5.0, sampling_steps=4, guide_scale=(5.0, 5.0),
                          seed=7, offload_model=False)
        condition = {"y": image_to_video_condition(vae, start, frames=LENGTH, height=HEIGHT,
                                                   width=WIDTH)}
        models = {"model": Recorder(0.3, official=False),
                  "low_noise_model": Recorder(-0.2, official=False), "boundary": 0.9}
        steps = 4
    z = vae.z_dim
    s = vae.spatial_compression
    ours = sample(shape=(1, z, 3, HEIGHT // s, WIDTH // s), context=context,
                  negative_context=negative, seed=7, steps=steps, cfg=5.0, shift=5.0,
                  sampler="unipc", batched_cfg=False, **models, **condition)

    mine = [models["model"]] + ([models["low_noise_model"]] if "low_noise_model" in models else [])
    for theirs, ours_expert in zip(experts, mine):
        assert len(theirs.calls) == len(ours_expert.calls) > 0  # the same steps on each expert
        for a, b in zip(theirs.calls, ours_expert.calls):
            torch.testing.assert_close(b["x"], a["x"], rtol=1e-5, atol=1e-5)
            assert torch.equal(b["t"].flatten(), a["t"].flatten())
            if a["y"] is not None:
                torch.testing.assert_close(b["y"], a["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], official.vae.decoded, rtol=1e-5, atol=1e-5)
