"""Test-only custom nodes for the vendored ComfyUI (``ComfyUI.base_directory`` installs them beside
the pack): what a core-node Wan prompt needs that no tiny file can give ComfyUI.

ComfyUI builds Wan's DiT with a 4096-wide text input (not read from the file; every real file has
4096), and CLIPLoader (type wan) builds the full-size UMT5-XXL (24 layers, 4096 wide, 256k
vocabulary) whatever the file holds. So make-tiny's DiT (text width 64, the tiny UMT5's) and its
UMT5 do not load there. Here:

- :func:`write_tiny_wan`: make-tiny's Wan 2.1 T2V DiT with ``text_embedding.0`` widened to 4096;
  imported by ComfyUI, this package writes it to ``<base>/test-models/diffusion_models/`` as
  ``tiny_wan.safetensors`` and adds that folder to ComfyUI's ``diffusion_models``;
- ``WanRTTestTextEmbedding``: random 4096-wide text embeddings from a seed, standing in for
  CLIPLoader + CLIPTextEncode.
"""

import sys
from pathlib import Path

import torch

COMFY_TEXT_DIM = 4096
TINY_WAN = "tiny_wan.safetensors"


def write_tiny_wan(path: Path) -> dict[str, torch.Tensor]:
    """Write the ComfyUI-loadable tiny Wan 2.1 T2V DiT (fp32) to ``path``; its state dict."""
    from safetensors.torch import save_file

    from wanrt.wan_core.tiny import dit

    sd = dit.weights("wan2.1_t2v_1.3B")
    dim = sd["text_embedding.0.weight"].shape[0]
    gen = torch.Generator().manual_seed(1)
    sd["text_embedding.0.weight"] = (torch.randn(dim, COMFY_TEXT_DIM, generator=gen)
                                     * COMFY_TEXT_DIM ** -0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return sd


class WanRTTestTextEmbedding:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 7, "min": 1, "max": 512})}}

    def embed(self, seed, tokens):
        gen = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, COMFY_TEXT_DIM, generator=gen), {}]],)


NODE_CLASS_MAPPINGS = {"WanRTTestTextEmbedding": WanRTTestTextEmbedding}

if "folder_paths" in sys.modules:  # imported by ComfyUI as a custom node
    import folder_paths

    _folder = Path(folder_paths.base_path) / "test-models" / "diffusion_models"
    write_tiny_wan(_folder / TINY_WAN)
    folder_paths.add_model_folder_path("diffusion_models", str(_folder))
