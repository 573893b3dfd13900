"""WanRT models under ComfyUI's memory management (imported only inside ComfyUI).

Inside ComfyUI the residency policy of ``wan_core.residency`` asks ``comfy.model_management``
before it puts a model on the GPU: each WanRT model is wrapped in a :class:`WanRTPatcher`, the
small part of ``comfy.model_patcher.ModelPatcher`` that ``load_models_gpu`` and ``LoadedModel``
use. So ComfyUI sees the sizes of WanRT models, frees room for them by its own policy (unloading
core models, or ours), lists them among its loaded models and unloads them on "free memory" /
"unload models"; WanRT and core models share one budget.
"""

from __future__ import annotations

import functools
import weakref

import comfy.model_management as mm
from torch import nn

from ..wan_core.residency import Residency, device_footprint, module_tensors


class WanRTPatcher:
    """What ComfyUI's ``LoadedModel`` needs of a model: its size, where it is, and how to load
    and unload it (here: ask the residency policy to move it)."""

    parent = None

    def __init__(self, residency: ComfyResidency, model: nn.Module):
        self._residency = residency
        self._model = weakref.ref(model)
        self.load_device = residency.device
        self.offload_device = residency.offload_device

    @property
    def model(self) -> nn.Module:
        return self._model()

    def point_at(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)

    def model_size(self) -> int:
        """What loading needs on the device (with block swap: the blocks kept there and the
        swapped ones in flight, not the whole model), the room ComfyUI frees for it."""
        return device_footprint(self.model)

    def loaded_size(self) -> int:
        loaded = self.is_loaded() and self._residency.device_bytes(self.model)
        return self.model_size() if loaded else 0

    def loaded_ram_size(self) -> int:
        return self.model_size() - self.loaded_size()

    def is_loaded(self) -> bool:
        return any(lm.model is self for lm in mm.current_loaded_models)

    def current_loaded_device(self):
        return self.load_device if self.is_loaded() else self.offload_device

    def model_dtype(self):
        return next(module_tensors(self.model)).dtype

    def partially_load(self, device, extra_memory=0, force_patch_weights=False) -> int:
        """Load all of it (block swap, not ComfyUI's partial loading, splits a WanRT DiT)."""
        self._residency.move_in(self.model)
        return self.loaded_size()

    def partially_unload(self, device, memory_to_free=0, force_patch_weights=False) -> int:
        return 0  # all or nothing: ComfyUI then calls detach

    def detach(self, unpatch_all=True):
        """Unloaded (``unpatch_all``) or only popped from ComfyUI's list, as
        ``load_models_gpu`` does before loading a model that is already loaded: then it stays."""
        if unpatch_all:
            self._residency.move_out(self.model)

    def is_clone(self, other) -> bool:
        return other is self

    def is_dynamic(self) -> bool:
        return False

    def model_patches_models(self) -> list:
        return []

    def model_patches_to(self, device) -> None:
        pass

    def lowvram_patch_counter(self) -> int:
        return 0

    def get_nested_additional_models(self) -> list:
        return []


class ComfyResidency(Residency):
    """The residency policy that loads through ``comfy.model_management.load_models_gpu`` and
    leaves ComfyUI's list of loaded models when it parks a model itself."""

    def __init__(self, device=None, offload_device=None, **options):
        super().__init__(device or mm.get_torch_device(),
                         offload_device or mm.unet_offload_device(), **options)
        self._patchers: dict[int, WanRTPatcher] = {}

    def patcher(self, module: nn.Module) -> WanRTPatcher:
        """The one patcher of ``module`` and the models sharing its weights (ComfyUI tells
        loaded models apart by patcher); it moves ``module``, the one asked for last (a LoRA
        copy holds weights its base does not)."""
        key = id(self._entry(module))
        if key not in self._patchers or self._patchers[key].model is None:
            self._patchers[key] = WanRTPatcher(self, module)
        self._patchers[key].point_at(module)
        return self._patchers[key]

    def load(self, module, role=None, label=None):
        entry = self._entry(module, role, label)
        if self.compute_device(entry.role) != self.device:
            return super().load(module)
        # ComfyUI frees room by its policy, then moves it in through WanRTPatcher.partially_load
        mm.load_models_gpu([self.patcher(module)])

    def park(self, module):
        patcher = self.patcher(module)
        for i, loaded in enumerate(mm.current_loaded_models):
            if loaded.model is patcher:
                mm.current_loaded_models.pop(i)
                if loaded.model_finalizer is not None:
                    loaded.model_finalizer.detach()
                break
        self.move_out(module)

    def move_in(self, module):
        """Residency.load: the policy's own moves (the other expert parked, then this model)."""
        super().load(module)

    def move_out(self, module):
        super().park(module)


@functools.cache
def comfy_residency() -> ComfyResidency:
    return ComfyResidency()
