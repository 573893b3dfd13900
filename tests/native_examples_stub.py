"""``WanRTAccelerate`` (MODEL → MODEL) as its definition is agreed, for the ComfyUI-native example
workflows while the node itself is built on another branch: the tests use this stand-in, which
does in the runner what the node does there (``nodes.core.accelerate``)."""

from wanrt.nodes.core.accelerate import accelerate_core_model


class ACCELERATE:
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "accelerate"
    CATEGORY = "WanRT"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "compile": (["off", "blocks", "full"], {"default": "blocks"}),
                             "attention": (["auto", "sdpa", "cudnn", "flash", "efficient"], {"default": "auto"})}}

    def accelerate(self, model, compile, attention):
        return (accelerate_core_model(model, compile, attention),)
