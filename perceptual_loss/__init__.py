"""perceptual-loss: frozen, checkpoint-free perceptual losses for PyTorch training loops.

>>> from perceptual_loss import PerceptualLoss, StyleLoss, LPIPSLoss, DISTSLoss
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Names are imported on first use (PEP 562): `perceptual-loss --help` and other light uses do not
# pay for torch and torchvision, and `from perceptual_loss import X` works as usual.
_EXPORTS: dict[str, str] = {
    "ADVERSARIAL_KINDS": "adversarial",
    "adaptive_weight": "adversarial",
    "discriminator_loss": "adversarial",
    "generator_loss": "adversarial",
    "TAPS": "backbones",
    "FeatureExtractor": "backbones",
    "available_taps": "backbones",
    "list_backbones": "backbones",
    "CombinedLoss": "criterion",
    "LossOutput": "criterion",
    "dists_distance": "distances",
    "feature_distance": "distances",
    "gram_matrices": "distances",
    "gram_matrix": "distances",
    "lpips_distance": "distances",
    "normalize_channels": "distances",
    "style_distance": "distances",
    "EvaluationError": "evaluate",
    "EvaluationResult": "evaluate",
    "evaluate_folders": "evaluate",
    "FrozenModule": "frozen",
    "Comparison": "losses",
    "ContextualComparison": "losses",
    "ContextualLoss": "losses",
    "DISTSComparison": "losses",
    "DISTSLoss": "losses",
    "FeatureLoss": "losses",
    "LPIPSComparison": "losses",
    "LPIPSLoss": "losses",
    "PerceptualComparison": "losses",
    "PerceptualLoss": "losses",
    "StyleComparison": "losses",
    "StyleLoss": "losses",
    "TemporalLPIPS": "losses",
    "charbonnier_distance": "pixel",
    "SSIMLoss": "structural",
    "MSSSIMLoss": "structural",
    "ssim": "structural",
    "ms_ssim": "structural",
    "FocalFrequencyLoss": "frequency",
    "FFTLoss": "frequency",
    "focal_frequency_distance": "frequency",
    "fft_distance": "frequency",
    "contextual_distance": "distances",
    "SlicedLoss": "sliced",
    "Slicing": "sliced",
    "take_slices": "sliced",
    "l1_distance": "pixel",
    "l2_distance": "pixel",
    "total_variation": "pixel",
    "InvalidWeightsError": "weights",
    "MissingWeightsError": "weights",
    "imagenet_weights_path": "weights",
}

if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from .adversarial import ADVERSARIAL_KINDS, adaptive_weight, discriminator_loss, generator_loss
    from .backbones import TAPS, FeatureExtractor, available_taps, list_backbones
    from .criterion import CombinedLoss, LossOutput
    from .distances import (
        contextual_distance,
        dists_distance,
        feature_distance,
        gram_matrices,
        gram_matrix,
        lpips_distance,
        normalize_channels,
        style_distance,
    )
    from .evaluate import EvaluationError, EvaluationResult, evaluate_folders
    from .frequency import FFTLoss, FocalFrequencyLoss, fft_distance, focal_frequency_distance
    from .frozen import FrozenModule
    from .losses import (
        Comparison,
        ContextualComparison,
        ContextualLoss,
        DISTSComparison,
        DISTSLoss,
        FeatureLoss,
        LPIPSComparison,
        LPIPSLoss,
        PerceptualComparison,
        PerceptualLoss,
        StyleComparison,
        StyleLoss,
        TemporalLPIPS,
    )
    from .pixel import charbonnier_distance, l1_distance, l2_distance, total_variation
    from .sliced import SlicedLoss, Slicing, take_slices
    from .structural import MSSSIMLoss, SSIMLoss, ms_ssim, ssim
    from .weights import InvalidWeightsError, MissingWeightsError, imagenet_weights_path


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ADVERSARIAL_KINDS",
    "TAPS",
    "CombinedLoss",
    "Comparison",
    "ContextualComparison",
    "ContextualLoss",
    "DISTSComparison",
    "DISTSLoss",
    "EvaluationError",
    "EvaluationResult",
    "FFTLoss",
    "FeatureExtractor",
    "FeatureLoss",
    "FocalFrequencyLoss",
    "FrozenModule",
    "InvalidWeightsError",
    "LPIPSComparison",
    "LPIPSLoss",
    "LossOutput",
    "MSSSIMLoss",
    "MissingWeightsError",
    "PerceptualComparison",
    "PerceptualLoss",
    "SSIMLoss",
    "SlicedLoss",
    "Slicing",
    "StyleComparison",
    "StyleLoss",
    "TemporalLPIPS",
    "__version__",
    "adaptive_weight",
    "available_taps",
    "charbonnier_distance",
    "contextual_distance",
    "discriminator_loss",
    "dists_distance",
    "evaluate_folders",
    "feature_distance",
    "fft_distance",
    "focal_frequency_distance",
    "generator_loss",
    "gram_matrices",
    "gram_matrix",
    "imagenet_weights_path",
    "l1_distance",
    "l2_distance",
    "list_backbones",
    "lpips_distance",
    "ms_ssim",
    "normalize_channels",
    "ssim",
    "style_distance",
    "take_slices",
    "total_variation",
]
