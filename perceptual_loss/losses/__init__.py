"""The perceptual losses: one module per loss, each a frozen extractor plus a comparison."""

from .lpips import LPIPSLoss
from .perceptual import PerceptualLoss
from .style import StyleLoss

__all__ = ["LPIPSLoss", "PerceptualLoss", "StyleLoss"]
