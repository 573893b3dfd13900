"""Dispatching layers: each picks its platform implementation once, at construction."""

from .custom_op import CustomOp, implementation_report
from .norms import GatedResidual, GatedResidualNormModulate, NormModulate, RMSNorm
from .rotary import RotaryEmbedding

__all__ = ["CustomOp", "implementation_report",
           "GatedResidual", "GatedResidualNormModulate", "NormModulate", "RMSNorm",
           "RotaryEmbedding"]
