"""The perceptual losses: one module per loss, each a frozen extractor plus a comparison."""

from ._base import Comparison, FeatureLoss
from .contextual import ContextualComparison, ContextualLoss
from .dists import DISTSComparison, DISTSLoss
from .lpips import LPIPSComparison, LPIPSLoss
from .perceptual import PerceptualComparison, PerceptualLoss
from .style import StyleComparison, StyleLoss
from .temporal import TemporalLPIPS

__all__ = [
    "Comparison",
    "ContextualComparison",
    "ContextualLoss",
    "DISTSComparison",
    "DISTSLoss",
    "FeatureLoss",
    "LPIPSComparison",
    "LPIPSLoss",
    "PerceptualComparison",
    "PerceptualLoss",
    "StyleComparison",
    "StyleLoss",
    "TemporalLPIPS",
]
