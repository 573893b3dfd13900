"""A stub ComfyUI environment for tests: fake ``folder_paths``, ``comfy.utils`` and
``comfy.model_management`` modules installed in ``sys.modules``."""

import sys
import types


class StubInterrupt(Exception):
    """Stands in for ComfyUI's ``InterruptProcessingException``."""


def install_comfy(monkeypatch, log, *, folder_paths, progress_bar, device, offload_device):
    """Install the stub modules. ``log.interrupted`` is ComfyUI's interrupt flag:
    ``throw_exception_if_processing_interrupted`` raises :class:`StubInterrupt` once when set.
    Returns the ``comfy.model_management`` stub."""
    def throw_exception_if_processing_interrupted():
        if log.interrupted:
            log.interrupted = False
            raise StubInterrupt()

    def interrupt_current_processing(value=True):
        log.interrupted = value

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = progress_bar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.interrupt_current_processing = interrupt_current_processing
    mm.InterruptProcessingException = StubInterrupt
    mm.get_torch_device = lambda: device
    mm.unet_offload_device = lambda: offload_device
    # the memory manager, as far as nodes/comfy_memory.py uses it: it loads what it is asked to
    mm.current_loaded_models = []
    mm.load_models_gpu = lambda models: [m.partially_load(device) for m in models]
    mm.loaded_models = lambda: [loaded.model for loaded in mm.current_loaded_models]
    package = types.ModuleType("comfy")
    package.utils, package.model_management = utils, mm
    for name, module in {"folder_paths": folder_paths, "comfy": package, "comfy.utils": utils,
                         "comfy.model_management": mm}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return mm
