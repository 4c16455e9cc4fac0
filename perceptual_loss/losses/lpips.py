"""LPIPS (Zhang et al., CVPR 2018) as a frozen, differentiable loss."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from typing_extensions import Unpack

from ..backbones import IMAGENET_MEAN, IMAGENET_STD, Features
from ..distances import lpips_distance, normalize_channels
from ..frozen import FrozenModule
from ..weights import LPIPS_NETS, LPIPS_VERSIONS, WeightsArg, load_lpips_heads
from ._base import Comparison, FeatureLoss
from .options import LossOptions, ViewOptions, split_options

LPIPS_NETWORKS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    "alex": ("alexnet", ("relu1", "relu2", "relu3", "relu4", "relu5"), (64, 192, 384, 256, 256)),
    "vgg": ("vgg16", ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), (64, 128, 256, 512, 512)),
    "squeeze": (
        "squeezenet1_1",
        ("relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9"),
        (64, 128, 256, 384, 384, 512, 512),
    ),
}
"""LPIPS net -> (torchvision backbone, taps, channels per tap), as in the ``lpips`` package."""

LPIPS_V0_MEAN = (0.5, 0.5, 0.5)
LPIPS_V0_STD = (0.5, 0.5, 0.5)
"""LPIPS v0.0 fed the trunk ``[-1, 1]`` images without ImageNet scaling (``lpips``' own note)."""


def lpips_normalization(version: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` on ``[0, 1]`` images that LPIPS ``version`` feeds its trunk.

    v0.1's scaling layer ``(x - shift) / scale`` on ``[-1, 1]`` input is exactly ImageNet
    normalisation of ``[0, 1]`` input, so LPIPS-vgg v0.1 can share VGG16 features with the
    other losses.
    """
    return (IMAGENET_MEAN, IMAGENET_STD) if version == "0.1" else (LPIPS_V0_MEAN, LPIPS_V0_STD)


class LinearHeads(FrozenModule):
    """LPIPS' frozen 1x1 "linear" layers, one ``(1, C_l, 1, 1)`` weight per tap (no dropout)."""

    def __init__(self, weights: list[Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w.clone()) for w in weights])
        self.freeze()


class LPIPSComparison(Comparison):
    """LPIPS from trunk features: normalise channels, squared difference, linear heads, mean.

    Holds LPIPS' frozen linear heads (from the files the ``lpips`` package ships, loaded
    strictly). The prepared target is its channel-normalised features.
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        version: Literal["0.1", "0.0"] = "0.1",
        spatial: bool | Literal["bilinear"] = False,
        head_weights: WeightsArg = None,
        **view: Unpack[ViewOptions],
    ) -> None:
        if spatial not in (False, True, "bilinear"):
            raise ValueError(
                f"spatial must be False, True (area map, mean = LPIPS) or 'bilinear' (lpips' map); got {spatial!r}."
            )
        if net not in LPIPS_NETWORKS:
            raise ValueError(f"Unknown LPIPS net {net!r}; choose one of {LPIPS_NETS}.")
        if version not in LPIPS_VERSIONS:
            raise ValueError(f"Unknown LPIPS version {version!r}; choose one of {LPIPS_VERSIONS}.")
        backbone, taps, channels = LPIPS_NETWORKS[net]
        super().__init__(backbone, taps, lpips_normalization(version), **view)
        self.heads = LinearHeads(load_lpips_heads(net, version, channels, head_weights))
        self.net, self.version, self.spatial = net, version, spatial

    @property
    def tileable(self) -> bool:
        return not self.spatial

    def tap_values(self, pred_features: Features, target: Features, masks: Features) -> dict[str, Tensor]:
        heads = dict(zip(self.taps, self.heads.weights, strict=True))
        return {tap: lpips_distance(pred_features, target, {tap: heads[tap]}, masks=masks) for tap in self.taps}

    def prepare_target(self, features: Features, masks: Features | None = None) -> Features:
        """Channel-normalised target features."""
        return {name: normalize_channels(features[name]) for name in self.taps}

    def forward(
        self, pred_features: Features, target: Features, image_size: tuple[int, int], masks: Features | None = None
    ) -> Tensor:
        """``(N,)`` LPIPS, or ``(N, 1, H, W)`` when spatial; see :func:`perceptual_loss.lpips_distance`."""
        heads = dict(zip(self.taps, self.heads.weights, strict=True))
        if masks is not None and self.spatial:
            raise ValueError("mask= with spatial=True: the map is per pixel already; multiply it by the mask instead.")
        upsample: Literal["area", "bilinear"] = "bilinear" if self.spatial == "bilinear" else "area"
        return lpips_distance(
            pred_features, target, heads, image_size if self.spatial else None, masks=masks, upsample=upsample
        )

    def extra_repr(self) -> str:
        return f"net={self.net!r}, version={self.version!r}, spatial={self.spatial}"


class LPIPSLoss(FeatureLoss):
    """Learned Perceptual Image Patch Similarity as a loss; equal to ``lpips.LPIPS`` (within 1e-5).

    ``LPIPS(x, y) = sum_l mean_{h,w} w_l . (n(phi_l(x)) - n(phi_l(y)))^2`` with ``n`` the
    channel-wise unit normalisation and ``w_l`` the linear heads that the ``lpips`` package ships,
    loaded strictly. Trunk and heads are frozen and the same in train and eval mode (no dropout), and out of
    ``state_dict``. One difference from ``lpips``: ``eps`` sits inside the square root of the
    normalisation (:func:`perceptual_loss.normalize_channels`), so an all-zero feature vector
    gives a finite gradient instead of NaN.

    Args:
        net: ``"alex"`` (the paper's default metric) | ``"vgg"`` (closer to a "perceptual loss"
            for training) | ``"squeeze"``.
        version: ``"0.1"`` (default) | ``"0.0"``.
        spatial: return a per-pixel ``(N, 1, H, W)`` map instead of one value per image:
            ``True`` spreads each layer's value over the pixels it stands for, so the map's mean
            is the scalar LPIPS exactly, for any ``H, W``; ``"bilinear"`` gives the ``lpips``
            package's map (bilinear upsampling, whose mean is not the scalar LPIPS).
        head_weights: path to a linear-head file in ``lpips``' format; ``None`` for the shipped one.
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`).
            ``input_range`` is ``(0, 1)`` by default: ``lpips.LPIPS`` expects ``(-1, 1)``, so pass
            ``input_range=(-1, 1)`` to feed the same tensors. ``mean``, ``std``, ``normalize``
            default to LPIPS' own (ImageNet's for v0.1, ``[-1, 1]`` input for v0.0;
            ``piq.LPIPS(mean=..., std=...)`` sets them too); others are no longer LPIPS as
            calibrated (experiments and parity only). ``pooling="avg"`` is
            ``piq.LPIPS(replace_pooling=True)`` (with ``net="vgg"``).

    Shape:
        - pred, target: ``(N, 3, H, W)`` in ``input_range``, ``H, W >= loss.min_size``.
        - Output: ``()``; with ``reduction="none"``, ``(N,)``, or ``(N, 1, H, W)`` if ``spatial``.

    Example:
        >>> loss = LPIPSLoss(net="squeeze", weights=None)
        >>> x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
        >>> bool(loss(x, x) == 0), loss(x, y).shape
        (True, torch.Size([]))
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        version: Literal["0.1", "0.0"] = "0.1",
        spatial: bool | Literal["bilinear"] = False,
        head_weights: WeightsArg = None,
        **options: Unpack[LossOptions],
    ) -> None:
        view, read = split_options(options, "LPIPSLoss")
        super().__init__(LPIPSComparison(net, version, spatial, head_weights, **view), **read)
