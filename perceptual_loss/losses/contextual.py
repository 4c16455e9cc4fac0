"""The contextual loss (Mechrez et al., ECCV 2018) on any tap, with CoBi's spatial term as an option."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from typing_extensions import Unpack

from ..backbones import Backbone, Features
from ..distances import contextual_distance
from ._base import Comparison, FeatureLoss, Layers, parse_layers
from .options import LossOptions, ViewOptions, split_options

CONTEXTUAL_LAYERS = ("relu4_2",)
"""The paper's layer for super-resolution (VGG19's ``conv4_2`` after its ReLU)."""


class ContextualComparison(Comparison):
    """``sum_l w_l * -log(CX_l)`` of pred's features against the target's (see
    :func:`perceptual_loss.distances.contextual_distance`); the target may be another size."""

    same_size = False

    def __init__(
        self,
        layers: Layers = CONTEXTUAL_LAYERS,
        backbone: Backbone = "vgg19",
        bandwidth: float = 0.5,
        spatial_weight: float = 0.0,
        **view: Unpack[ViewOptions],
    ) -> None:
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0; got {bandwidth!r}.")
        if not 0 <= spatial_weight <= 1:
            raise ValueError(
                f"spatial_weight must be in [0, 1] (0: the contextual loss; CoBi: 0.1); got {spatial_weight!r}."
            )
        self.layer_weights = parse_layers(layers)
        super().__init__(backbone, list(self.layer_weights), **view)
        self.bandwidth, self.spatial_weight = float(bandwidth), float(spatial_weight)

    def check_features(self, dims: Mapping[str, int]) -> None:
        flat = sorted(tap for tap in self.taps if dims[tap] != 4)
        if flat:
            raise ValueError(
                f"The contextual loss compares feature positions; the taps {flat} of {self.backbone} have none."
            )

    def forward(
        self, pred_features: Features, target: Features, image_size: tuple[int, int], masks: Features | None = None
    ) -> Tensor:
        if masks is not None:
            raise ValueError("ContextualLoss takes no mask: it matches features anywhere in the image, not in place.")
        n = next(iter(pred_features.values())).shape[0]
        target = {k: v.expand(n, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in target.items()}
        return contextual_distance(pred_features, target, self.layer_weights, self.bandwidth, self.spatial_weight)

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone!r}, layers={self.layer_weights}, bandwidth={self.bandwidth:g}, "
            f"spatial_weight={self.spatial_weight:g}"
        )


class ContextualLoss(FeatureLoss):
    """The contextual loss of Mechrez et al. (ECCV 2018): pairs that are not aligned, compared feature by feature.

    Every feature position of pred is compared with every position of the target (cosine
    distance, relative to the nearest, turned into affinities by ``exp((1 - d) / bandwidth)``);
    the loss is ``-log`` of the mean over target features of their best match. With
    ``spatial_weight > 0`` it is CoBi (Zhang et al., "Zoom to Learn", CVPR 2019), which also
    rewards matches close in position. The matrix is built in blocks, each recomputed in
    backward, so memory holds one block.

    Args:
        layers: tap names (weight 1 each) or ``{name: weight}``; default ``relu4_2`` (the
            paper's, on VGG19).
        backbone: any backbone (a name or a module), ``"vgg19"`` by default.
        bandwidth: ``h`` (0.5; CoBi's code uses 1.0).
        spatial_weight: CoBi's weight of the spatial affinity (0: the contextual loss; 0.1 in
            CoBi); needs pred and target of one size.
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`).

    Shape:
        - pred: ``(N, 3, H, W)``; target: ``(N or 1, 3, H', W')`` (another size is fine for
          ``spatial_weight=0``).
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> loss = ContextualLoss(weights=None)
        >>> x = torch.rand(1, 3, 64, 64)
        >>> bool(loss(x, x) < 1e-4), bool(loss(x, torch.rand(1, 3, 64, 64)) > 1e-2)
        (True, True)
    """

    def __init__(
        self,
        layers: Layers = CONTEXTUAL_LAYERS,
        backbone: Backbone = "vgg19",
        bandwidth: float = 0.5,
        spatial_weight: float = 0.0,
        **options: Unpack[LossOptions],
    ) -> None:
        view, read = split_options(options, "ContextualLoss")
        super().__init__(ContextualComparison(layers, backbone, bandwidth, spatial_weight, **view), **read)
