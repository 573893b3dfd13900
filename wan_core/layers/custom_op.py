"""Layers that bind a per-platform forward (the seed's CustomOp pattern).

Which forward a layer runs is decided by ``wan_core.runtime.RuntimeOptions.layer_impl`` (the
platform policy and the switches, in one place): at construction from the environment's defaults
(``RuntimeOptions.from_env()``), and again whenever ``runtime.apply`` / ``compile_dit`` bind
other options through :meth:`CustomOp.set_impl`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...kernels import Platform
from ..runtime import RuntimeOptions


class CustomOp(nn.Module):
    """A module whose ``forward`` is bound once, at construction, to its platform's implementation.

    Subclasses implement ``forward_native`` (pure torch, compile-friendly) and, where a fused
    kernel exists, ``forward_fused``. ``self.impl`` names the choice (see ``runtime.POLICY``).
    """

    layer_types: list[type[CustomOp]] = []  # every subclass, for implementation_report()
    forward_fused = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CustomOp.layer_types.append(cls)

    def __init__(self) -> None:
        super().__init__()
        self.set_impl(self.choose_impl())

    def set_impl(self, impl: str, **compile_options) -> None:
        """Bind ``forward`` to implementation ``impl`` (``"triton"``, ``"compiled-native"`` or
        ``"native"``); ``compile_options`` go to ``torch.compile`` for ``"compiled-native"``."""
        if impl == "triton":
            if self.forward_fused is None:
                raise ValueError(f"{type(self).__name__} has no fused kernel")
            self._forward_method = self.forward_fused
        elif impl == "compiled-native":
            # One code object for all instances: layers of the same config share the compiled
            # graph (Dynamo guards on their attributes, not their identity).
            self._forward_method = torch.compile(self.forward_native, **compile_options)
        elif impl == "native":
            self._forward_method = self.forward_native
        else:
            raise ValueError(f"unknown layer implementation {impl!r}")
        self.impl = impl

    def forward(self, *args, **kwargs):
        return self._forward_method(*args, **kwargs)

    def forward_native(self, *args, **kwargs):
        raise NotImplementedError

    @classmethod
    def choose_impl(cls, platform: Platform | None = None,
                    options: RuntimeOptions | None = None) -> str:
        """The implementation this layer type runs under ``options`` (default: the environment's)
        on ``platform`` (default: the options' platform)."""
        options = options or RuntimeOptions.from_env()
        if platform is not None:
            options = options.replace(platform=platform.name)
        return options.layer_impl(cls)


def implementation_report(model: nn.Module | None = None) -> dict[str, str]:
    """``{layer class name: implementation}`` on the current platform.

    Without ``model``: what each layer type would run if built now (environment defaults). With ``model``: what its
    layers actually run (instances built under different switches are listed comma-separated).
    """
    if model is None:
        return {cls.__name__: cls.choose_impl() for cls in CustomOp.layer_types}
    impls: dict[str, set[str]] = {}
    for m in model.modules():
        if isinstance(m, CustomOp):
            impls.setdefault(type(m).__name__, set()).add(m.impl)
    return {name: ", ".join(sorted(s)) for name, s in impls.items()}
