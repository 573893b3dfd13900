"""Dispatching layers: each binds its platform implementation at construction
(``runtime.apply`` rebinds it)."""

from .custom_op import CustomOp, implementation_report
from .norms import GatedResidual, GatedResidualNormModulate, NormModulate, RMSNorm
from .rotary import RotaryEmbedding

__all__ = ["CustomOp", "implementation_report",
           "GatedResidual", "GatedResidualNormModulate", "NormModulate", "RMSNorm",
           "RotaryEmbedding"]
