"""Gram-matrix style loss of Gatys et al. (2016)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from typing_extensions import Unpack

from ..backbones import Backbone, Features
from ..distances import GRAM_DISTANCES, Distance, gram_matrices, style_distance
from ._base import FeatureLoss, LayerComparison, Layers
from .options import LossOptions, ViewOptions, split_options

JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
"""Johnson et al.'s style layers on VGG16, the default."""


class StyleComparison(LayerComparison):
    """``sum_l w_l * mean_{ij} (G_l(pred) - G_l(target))_{ij}^2`` (or absolute) -> ``(N,)``.

    The prepared target is its Gram matrices, so a cached style target costs nothing per step.
    """

    same_size = False
    distances = GRAM_DISTANCES

    def __init__(
        self,
        layers: Layers = JOHNSON_STYLE_LAYERS,
        backbone: Backbone = "vgg16",
        distance: Distance = "l2",
        **view: Unpack[ViewOptions],
    ) -> None:
        super().__init__(layers, backbone, distance, **view)

    def check_features(self, dims: Mapping[str, int]) -> None:
        flat = {tap: dims[tap] for tap in self.taps if dims[tap] != 4}
        if flat:
            raise ValueError(
                f"Gram matrices need spatial feature maps (N, C, H, W), but the taps {sorted(flat)} of "
                f"{self.backbone} give {', '.join(str(d) for d in sorted(set(flat.values())))}-D features (logits or tokens). Tap "
                f"convolutional stages instead (see perceptual_loss.available_taps)."
            )

    def prepare_target(self, features: Features, masks: Features | None = None) -> Features:
        """The target's Gram matrices ``{tap: (N or 1, C, C)}`` (mask-weighted with ``masks``)."""
        return gram_matrices({name: features[name] for name in self.taps}, masks)

    def forward(
        self, pred_features: Features, target: Features, image_size: tuple[int, int], masks: Features | None = None
    ) -> Tensor:
        return style_distance(pred_features, target, self.layer_weights, self.distance, masks)


class StyleLoss(FeatureLoss):
    """Weighted distance between Gram matrices of frozen-backbone features.

    ``G_l = F_l F_l^T / (C_l H_l W_l)`` for features ``F_l`` of shape ``(C_l, H_l W_l)``, always in
    float32 (also under autocast: no fp16 overflow), and
    ``loss = sum_l w_l * mean_{ij} (G_l(pred) - G_l(target))_{ij}^2`` (``l2``, default) or absolute.

    Args:
        layers: tap names (weight 1 each) or ``{name: weight}``; default Johnson et al.'s
            ``relu1_2, relu2_2, relu3_3, relu4_3``.
        backbone: as for :class:`~perceptual_loss.PerceptualLoss` (taps must give
            ``(N, C, H, W)`` maps; token taps are patch maps).
        distance: ``"l2"`` (mean squared, default) | ``"l1"`` between Gram matrices.
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`);
            ``pooling="avg"`` is Gatys et al.'s choice for style.

    Shape:
        - pred: ``(N, 3, H, W)``; target: ``(N or 1, 3, H', W')``: Gram matrices do not need equal
          sizes, and a single style image is compared with every prediction.
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = StyleLoss(weights=None)
        >>> style = torch.rand(1, 3, 48, 48)
        >>> loss(torch.rand(4, 3, 32, 32), style).shape
        torch.Size([])
    """

    def __init__(
        self,
        layers: Layers = JOHNSON_STYLE_LAYERS,
        backbone: Backbone = "vgg16",
        distance: Distance = "l2",
        **options: Unpack[LossOptions],
    ) -> None:
        view, read = split_options(options, "StyleLoss")
        super().__init__(StyleComparison(layers, backbone, distance, **view), **read)
