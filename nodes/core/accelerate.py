"""WanRT acceleration of a runner ``MODEL`` (a :class:`CoreModel`): what the ``WanRTAccelerate``
node does when ``wanrt run`` / ``wanrt serve`` hand it our MODEL rather than ComfyUI's. Its
``compile`` and ``attention`` choices map onto ``wan_core``'s compile modes and attention
backends; the loader's (cached) model is left as it was."""

from __future__ import annotations

from ...wan_core import runtime
from ...wan_core.dit.model import weight_sharing_copy
from ..accelerate import COMPILE_MODES
from .model import CoreModel


def accelerate_core_model(model: CoreModel, compile: str = "blocks",
                          attention: runtime.AttentionOptions | None = None) -> CoreModel:
    """A CoreModel whose DiT (sharing the input's weights) runs the attention plan ``attention``
    (the KSampler announces each step for its step exclusions) and is compiled per ``compile``
    on its first call (``off``: the platform's fused layers only)."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
    options = runtime.RuntimeOptions.from_env(attention=attention or runtime.AttentionOptions(),
                                              compile=runtime.CompileOptions(compile))
    return model.with_dit(runtime.apply(weight_sharing_copy(model.dit), options))
