"""Files in and out: images from the host's input folder, videos into its output folder."""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from ..wan_core.video_io import save_video
from . import base, host

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Input images: larger ones are refused before decoding (a small compressed file can hold a huge
# image); those above LOADED_PIXELS are downscaled while decoding, since Wan videos are smaller.
MAX_IMAGE_PIXELS = 8192 * 8192
LOADED_PIXELS = 4096 * 4096


def input_images() -> list[str]:
    """The image files at the top of the host's input folder, sorted."""
    folder = host.current().input_dir()
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, name)))


def input_image_path(name: str) -> str:
    """The path of input image ``name``; a ValueError naming the input folder if it is not there."""
    folder = host.current().input_dir()
    if name not in input_images():
        raise ValueError(f"image {name!r} is not in the input folder {folder} (images there: "
                         f"{', '.join(input_images()) or 'none'})")
    return os.path.join(folder, name)


class WanRTLoadImage:
    DESCRIPTION = ("Load an image from the input folder (ComfyUI's input/, or headless the "
                   "--input-dir, by default the example images in workflows/inputs), like "
                   "ComfyUI's Load Image.")
    CATEGORY = base.CATEGORY + "/image"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The image, IMAGE [1, H, W, 3] in [0, 1] (alpha dropped).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (input_images(), {
            "image_upload": True, "tooltip": "An image file in the input folder; upload one with "
                                             "the button."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        try:
            with open_image(image):
                pass
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, image):
        """The file's hash, so an edited image with the same name is loaded again."""
        with open(input_image_path(image), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def load(self, image):
        with open_image(image) as picture:
            width, height = picture.size
            if width * height > LOADED_PIXELS:  # shrink while decoding (JPEG) and right after
                scale = (LOADED_PIXELS / (width * height)) ** 0.5
                size = (max(1, int(width * scale)), max(1, int(height * scale)))
                picture.draft("RGB", size)
                picture.thumbnail(size, Image.Resampling.LANCZOS)
            rgb = ImageOps.exif_transpose(picture).convert("RGB")
        return (torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None],)


def open_image(name: str) -> Image.Image:
    """Input image ``name``, opened (its header read, nothing decoded). A ValueError names the
    file if it is missing, not an image, or has more than MAX_IMAGE_PIXELS pixels."""
    path = input_image_path(name)
    try:
        with warnings.catch_warnings():  # our own, lower limit follows
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"image {name!r} cannot be read as an image: {e}") from e
    width, height = picture.size
    if width * height > MAX_IMAGE_PIXELS:
        picture.close()
        raise ValueError(f"image {name!r} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                         f"input images may have at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
    return picture


class WanRTSaveVideo:
    DESCRIPTION = ("Save frames as a video in the output folder and preview it. The prompt and the "
                   "workflow are embedded (mp4, webp), so dropping the file onto ComfyUI reopens "
                   "the workflow.")
    CATEGORY = base.CATEGORY + "/video"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames in order, IMAGE [N, H, W, 3]."}),
                "filename_prefix": ("STRING", {
                    "default": "video/WanRT",
                    "tooltip": "Name of the file inside the output folder; folders allowed, "
                               "'..' and absolute paths not. A counter is appended: "
                               "video/WanRT_00001_.mp4."}),
                "format": (["mp4", "webp", "gif"], {"default": "mp4",
                                                    "tooltip": "mp4: H.264; webp and gif: "
                                                               "animated images."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 0.01, "max": 1000.0, "step": 1.0,
                                  "tooltip": "Frames per second: Wan 2.1 and Wan 2.2 A14B make 16, "
                                             "Wan 2.2 TI2V 5B 24."}),
                "quality": ("INT", {"default": 90, "min": 0, "max": 100,
                                    "tooltip": "webp quality (100 = best). mp4 uses crf, gif "
                                               "neither."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51,
                                "tooltip": "mp4 (H.264) constant rate factor: lower is better "
                                           "and bigger, 0 lossless, ~18 visually lossless."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        return True if filename_prefix is None else base.validate_filename_prefix(filename_prefix)

    def save(self, images, filename_prefix, format, fps, quality, crf, prompt=None,
             extra_pnginfo=None):
        if not host.current().writes_outputs:
            return {"ui": {"images": [], "animated": [True]}}
        metadata = dict(extra_pnginfo or {})  # {"workflow": the UI JSON} from the frontend
        if prompt is not None:
            metadata = {"prompt": prompt, **metadata}
        [saved] = save_video(images, host.current().output_dir(), filename_prefix, format=format,
                             fps=fps, crf=crf, quality=quality, metadata=metadata,
                             check_interrupt=host.current().throw_if_interrupted)
        return {"ui": {"images": [saved.ui()], "animated": [True]}}


NODES = {"WanRTLoadImage": WanRTLoadImage, "WanRTSaveVideo": WanRTSaveVideo}
DISPLAY_NAMES = {"WanRTLoadImage": "WanRT Load Image", "WanRTSaveVideo": "WanRT Save Video"}
