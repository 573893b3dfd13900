"""Text conditioning: positive and negative prompts → the text contexts the sampler guides with."""

from __future__ import annotations

from ..wan_core.pipelines import encode_prompts
from ..wan_core.prompts import NEGATIVE_PROMPT
from . import base, host


class WanRTTextEncode:
    DESCRIPTION = ("Encode the prompt and the negative prompt with the UMT5 text encoder. The "
                   "sampler steers towards the first and away from the second (classifier-free "
                   "guidance).")
    CATEGORY = base.CATEGORY + "/conditioning"
    RETURN_TYPES = ("WANRT_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The positive and negative text contexts, each [1, 512, 4096].",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("WANRT_TEXT_ENCODER", {"tooltip": "From WanRT Load Text Encoder."}),
            "positive": ("STRING", {
                "multiline": True, "dynamicPrompts": True, "default": "",
                "tooltip": "What the video shows: subject, motion, scene, camera, style."}),
            "negative": ("STRING", {
                "multiline": True, "dynamicPrompts": True, "default": NEGATIVE_PROMPT,
                "tooltip": "What to steer away from. Filled in with Wan's default negative "
                           "prompt; left empty, that default is used."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, positive):
        if positive is not None and not positive.strip():  # None: fed by a link
            return "the positive prompt is empty: describe the video to generate"
        return True

    def encode(self, text_encoder, positive, negative):
        with host.current().residency().use(text_encoder, "text_encoder", "text encode"):
            context, negative_context = encode_prompts(text_encoder, positive, negative)
        return ({"context": context, "negative_context": negative_context},)


NODES = {"WanRTTextEncode": WanRTTextEncode}
DISPLAY_NAMES = {"WanRTTextEncode": "WanRT Text Encode"}
