"""Feature-reconstruction ("perceptual", "content", "VGG") loss of Johnson et al. (2016)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from typing_extensions import Unpack

from ..backbones import Backbone, Features
from ..distances import Distance, feature_distance, feature_distance_map
from ._base import FeatureLoss, LayerComparison, Layers
from .options import LossOptions, ViewOptions, split_options

PRESETS: dict[str, dict[str, Any]] = {
    "esrgan": {"layers": {"conv5_4": 1.0}, "backbone": "vgg19", "distance": "l1"},
    "real_esrgan": {
        "layers": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
        "backbone": "vgg19",
        "distance": "l1",
    },
}
"""The perceptual terms of published recipes, as :class:`PerceptualLoss` arguments: ``esrgan``
(Wang et al. 2018, BasicSR's ``train_ESRGAN_x4.yml``: VGG19 ``conv5_4``, pre-activation, L1) and
``real_esrgan`` (Wang et al. 2021, ``train_realesrgan_x4plus.yml``: ``conv1_2``, ``conv2_2``
weighted 0.1, ``conv3_4``, ``conv4_4``, ``conv5_4`` weighted 1, L1). Both normalise the input with
ImageNet's statistics, as BasicSR's ``use_input_norm: true``."""


def preset_arguments(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``PRESETS[name]`` updated with ``overrides``; an unknown name lists the presets."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {tuple(PRESETS)}.")
    return {**PRESETS[name], **overrides}


class PerceptualComparison(LayerComparison):
    """``sum_l w_l * mean |phi_l(pred) - phi_l(target)|`` (``l1``) or squared (``l2``) -> ``(N,)``."""

    def __init__(
        self,
        layers: Layers = ("relu2_2",),
        backbone: Backbone = "vgg16",
        distance: Distance = "l1",
        spatial: bool = False,
        **view: Unpack[ViewOptions],
    ) -> None:
        super().__init__(layers, backbone, distance, **view)
        if spatial and distance == "fro":
            raise ValueError(
                "spatial=True needs a distance that is a mean over positions (l1, l2, normalized_l2); 'fro' is "
                "a norm of the whole map."
            )
        self.spatial = spatial

    @property
    def tileable(self) -> bool:
        return not self.spatial and self.distance != "fro"

    def tap_values(self, pred_features: Features, target: Features, masks: Features) -> dict[str, Tensor]:
        return {
            tap: feature_distance(pred_features, target, {tap: weight}, self.distance, masks)
            for tap, weight in self.layer_weights.items()
        }

    def forward(
        self, pred_features: Features, target: Features, image_size: tuple[int, int], masks: Features | None = None
    ) -> Tensor:
        if self.spatial:
            if masks is not None:
                raise ValueError(
                    "mask= with spatial=True: the map is per pixel already; multiply it by the mask instead."
                )
            return feature_distance_map(pred_features, target, self.layer_weights, self.distance, image_size)
        return feature_distance(pred_features, target, self.layer_weights, self.distance, masks)


class PerceptualLoss(FeatureLoss):
    """Weighted distance between frozen-backbone features of ``pred`` and ``target``.

    ``loss = sum_l w_l * mean |phi_l(pred) - phi_l(target)|`` (``l1``) or its squared form (``l2``,
    Johnson et al.'s feature reconstruction loss), averaged over the batch by default.

    Args:
        layers: names of the taps to compare (weight 1 each), or ``{name: weight}``: the classic
            names of :data:`perceptual_loss.TAPS` (``relu2_2``, ``conv5_4``, ``pool3``), any
            torchvision node name (``layer3``, ``features.4``; see
            :func:`perceptual_loss.available_taps`), or ``logits``.
        backbone: ``"vgg16"`` (default) | ``"vgg19"`` | any torchvision classification model
            (``"resnet50"``, ``"convnext_small"``, ``"vit_b_16"``, ...) | an ``nn.Module`` of
            your own (copied; never changed nor saved).
        distance: ``"l1"`` (mean absolute) | ``"l2"`` (mean squared; ``F.mse_loss`` of the features)
            | ``"normalized_l2"`` (channel-normalised features, squared difference summed over
            channels, mean over positions: LPIPS without heads, MONAI's perceptual loss) |
            ``"fro"`` (Frobenius norm of the difference per sample: BasicSR's ``criterion: fro``,
            which takes the norm over the whole batch; equal for batches of one).
        spatial: return a ``(N, 1, H, W)`` map of where the loss comes from (each tap's
            per-position distance spread over the pixels it stands for); its mean over the
            image is the scalar loss exactly, for any ``H, W``.
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`):
            ``reduction``, ``weights``, ``input_range``, ``grayscale``, ``check_inputs``,
            ``mask_mode``; what the backbone sees: ``mean``, ``std``, ``normalize``, ``resize``
            (e.g. ``224`` as MaskBit and TiTok do), ``pooling``, ``pool_stride``.

    Shape:
        - pred, target: ``(N, 3, H, W)`` in ``input_range``, ``H, W >= loss.min_size``
          (any size with ``resize``).
        - Output: ``()``, or ``(N,)`` with ``reduction="none"`` (``(N, 1, H, W)`` if ``spatial``).

    Example:
        >>> loss = PerceptualLoss({"relu2_2": 1.0, "relu3_3": 0.5}, weights=None)
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> value = loss(x, torch.rand(2, 3, 32, 32))
        >>> value.backward()
        >>> value.shape, x.grad.shape
        (torch.Size([]), torch.Size([2, 3, 32, 32]))

    ESRGAN's recipe is ``PerceptualLoss({"conv5_4": 1.0}, backbone="vgg19")``, also
    ``PerceptualLoss.from_preset("esrgan")`` (see :data:`PRESETS`); MaskBit's logit
    loss is ``PerceptualLoss(["logits"], backbone="convnext_small", distance="l2", resize=224)``;
    MONAI's 2-D torchvision loss is
    ``PerceptualLoss(["layer4.2.relu_2"], backbone="resnet50", distance="normalized_l2")``.
    """

    def __init__(
        self,
        layers: Layers = ("relu2_2",),
        backbone: Backbone = "vgg16",
        distance: Distance = "l1",
        spatial: bool = False,
        **options: Unpack[LossOptions],
    ) -> None:
        view, read = split_options(options, "PerceptualLoss")
        super().__init__(PerceptualComparison(layers, backbone, distance, spatial, **view), **read)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PerceptualLoss:
        """The perceptual term of a published recipe (:data:`PRESETS`), any argument overridden.

        Example:
            >>> loss = PerceptualLoss.from_preset("real_esrgan", weights=None)
            >>> loss.comparison.layer_weights["conv1_2"], loss.comparison.backbone
            (0.1, 'vgg19')
        """
        return cls(**preset_arguments(name, overrides))
