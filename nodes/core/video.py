"""Images and videos: LoadImage, CreateVideo and SaveVideo as ComfyUI's (H.264 mp4 out)."""

from __future__ import annotations

import dataclasses

import torch

from ...wan_core.video_io import save_video
from .. import base, host
from ..files import WanRTLoadImage, input_images

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # ComfyUI's V3 combo whose options bring their own inputs
CONTAINERS = {"auto": ["auto", "h264", "av1"], "mp4": ["auto", "h264", "av1"],
              "mkv": ["auto", "h264", "av1"], "webm": ["auto", "av1"]}
CRF = {"h264": (23.0, 51.0), "av1": (30.0, 63.0)}  # codec -> (default, max)


def encoding_input(codec: str) -> tuple:
    default, top = CRF[codec]
    return (DYNAMIC_COMBO, {"display_name": "encoding mode", "options": [
        {"key": "auto", "inputs": {"required": {}}},
        {"key": "re-encode", "inputs": {"required": {
            "crf": ("FLOAT", {"default": default, "min": 0.0, "max": top, "step": 1.0}),
            "color_space": ("COMBO", {"display_name": "color space", "default": "auto", "multiselect": False,
                                      "options": ["auto", "sRGB", "HDR", "HDR PQ"]})}}}]})


def codec_input(codecs: list[str], **options) -> tuple:
    return (DYNAMIC_COMBO, {**options, "options": [
        {"key": codec, "inputs": {"required": {}} if codec == "auto" else
         {"required": {}, "optional": {"encoding": encoding_input(codec)}}} for codec in codecs]})


@dataclasses.dataclass(frozen=True)
class Video:
    """``VIDEO``: frames ``IMAGE [T, H, W, 3]`` in [0, 1] and their rate."""

    images: torch.Tensor
    fps: float

    def get_dimensions(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[1]


class LoadImage(WanRTLoadImage):
    DESCRIPTION = "Load an image from the input folder; MASK is its alpha (1 = transparent)."
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    OUTPUT_TOOLTIPS = (None, None)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (input_images(), {"image_upload": True})}}

    def load(self, image):
        (pixels,) = super().load(image)
        return pixels, torch.zeros((1, 64, 64))  # no alpha handling: an opaque image's mask


class CreateVideo:
    DESCRIPTION = "Create a video from images."
    CATEGORY = "video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0})},
                "optional": {"audio": ("AUDIO",),
                             "bit_depth": ("INT", {"default": 8, "min": 8, "max": 10, "step": 2,
                                                   "display": "number"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, bit_depth=None):
        return True if bit_depth in (None, 8) else "bit_depth: WanRT writes 8-bit video only"

    def execute(self, images, fps, audio=None, bit_depth=8):
        if audio is not None:
            raise ValueError("CreateVideo: WanRT writes video without audio; disconnect 'audio'")
        return (Video(images, float(fps)),)


class SaveVideo:
    DESCRIPTION = "Saves the input videos to your ComfyUI output directory."
    CATEGORY = "video"
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_NODE = True
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",),
                             "filename_prefix": ("STRING", {"default": "video/ComfyUI", "multiline": False}),
                             "format": (DYNAMIC_COMBO, {"options": [
                                 {"key": key, "inputs": {"required": {"codec": codec_input(codecs)}}}
                                 for key, codecs in CONTAINERS.items()]})},
                "optional": {"codec": codec_input(CONTAINERS["auto"], hidden=True)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix, format, **dotted):
        if format is not None and format not in ("auto", "mp4"):
            return f"format {format!r}: WanRT writes mp4 (auto / mp4) only"
        codec = dotted.get("format.codec")
        if codec is not None and codec not in ("auto", "h264"):
            return f"codec {codec!r}: WanRT writes H.264 (auto / h264) only"
        return True if filename_prefix is None else base.validate_filename_prefix(filename_prefix)

    def execute(self, video, filename_prefix, format, codec=None, prompt=None, extra_pnginfo=None, **dotted):
        if not host.current().writes_outputs:
            return {"ui": {"images": [], "animated": [True]}, "result": (video,)}
        metadata = dict(extra_pnginfo or {})
        if prompt is not None:
            metadata["prompt"] = prompt
        crf = dotted.get("format.codec.encoding.crf")
        [saved] = save_video(video.images, host.current().output_dir(), filename_prefix, format="mp4",
                             fps=video.fps, metadata=metadata, **({} if crf is None else {"crf": int(crf)}))
        return {"ui": {"images": [saved.ui()], "animated": [True]}, "result": (video,)}


NODES = {cls.__name__: cls for cls in (LoadImage, CreateVideo, SaveVideo)}
DISPLAY_NAMES = {"LoadImage": "Load Image", "CreateVideo": "Create Video", "SaveVideo": "Save Video"}
