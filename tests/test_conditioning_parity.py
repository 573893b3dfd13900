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

import pytest
import torch
from reference import official_module
from safetensors.torch import load_file, save_file

from wanrt.wan_core import load_clip_vision, load_vae
from wanrt.wan_core.conditioning import first_frame_latent, image_to_video_condition
from wanrt.wan_core.sampling import token_timesteps
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

def official_clip_module():
    """``wan/modules/animate/clip.py``; it imports torchvision.transforms for preprocessing
    helpers this test does not call, so a bare placeholder stands in while it loads."""
    official_module("modules/tokenizers")  # transformers first, so it never sees the placeholder
    placeholder = types.ModuleType("torchvision")
    placeholder.transforms = types.ModuleType("torchvision.transforms")
    saved = {name: sys.modules.get(name) for name in ("torchvision", "torchvision.transforms")}
    sys.modules.update({"torchvision": placeholder, "torchvision.transforms": placeholder.transforms})
    try:
        return official_module("modules/animate/clip")
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
    clip = official_clip_module()
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
