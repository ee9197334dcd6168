"""Classical preprocessing: numpy and scikit-image only (never torch), so it starts fast."""

from .ops import OPS, OpSpec, Param
from .pipeline import Pipeline, Step

__all__ = ["OPS", "OpSpec", "Param", "Pipeline", "Step"]
