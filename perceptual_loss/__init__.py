"""perceptual-loss: frozen, checkpoint-free perceptual losses for PyTorch training loops.

>>> from perceptual_loss import PerceptualLoss, StyleLoss, LPIPSLoss, DISTSLoss
"""

import logging

from .adversarial import ADVERSARIAL_KINDS, adaptive_weight, discriminator_loss, generator_loss
from .backbones import TAPS, FeatureExtractor, available_taps, list_backbones
from .criterion import CombinedLoss, LossOutput
from .distances import (
    dists_distance,
    feature_distance,
    gram_matrices,
    gram_matrix,
    lpips_distance,
    normalize_channels,
    style_distance,
)
from .evaluate import EvaluationError, EvaluationResult, evaluate_folders
from .frozen import FrozenModule
from .losses import (
    Comparison,
    DISTSComparison,
    DISTSLoss,
    FeatureLoss,
    LPIPSComparison,
    LPIPSLoss,
    PerceptualComparison,
    PerceptualLoss,
    StyleComparison,
    StyleLoss,
)
from .pixel import charbonnier_distance, l1_distance, l2_distance, total_variation
from .weights import InvalidWeightsError, MissingWeightsError, imagenet_weights_path

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ADVERSARIAL_KINDS",
    "EvaluationError",
    "EvaluationResult",
    "evaluate_folders",
    "TAPS",
    "CombinedLoss",
    "LossOutput",
    "adaptive_weight",
    "charbonnier_distance",
    "discriminator_loss",
    "generator_loss",
    "l1_distance",
    "l2_distance",
    "total_variation",
    "Comparison",
    "DISTSComparison",
    "DISTSLoss",
    "dists_distance",
    "FeatureLoss",
    "LPIPSComparison",
    "PerceptualComparison",
    "StyleComparison",
    "FeatureExtractor",
    "FrozenModule",
    "InvalidWeightsError",
    "LPIPSLoss",
    "MissingWeightsError",
    "PerceptualLoss",
    "StyleLoss",
    "__version__",
    "available_taps",
    "list_backbones",
    "feature_distance",
    "gram_matrices",
    "gram_matrix",
    "imagenet_weights_path",
    "lpips_distance",
    "normalize_channels",
    "style_distance",
]
