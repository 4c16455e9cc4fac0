"""LPIPS (Zhang et al., CVPR 2018) as a frozen, differentiable loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from ..backbones import IMAGENET_MEAN, IMAGENET_STD, Features, Normalize, Pooling
from ..backbones.registry import input_statistics
from ..distances import lpips_distance, normalize_channels
from ..frozen import FrozenModule
from ..validation import Grayscale
from ..weights import LPIPS_NETS, LPIPS_VERSIONS, WeightsArg, load_lpips_heads
from ._base import Comparison, FeatureLoss, MaskMode, Reduction

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
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalize: Normalize = True,
        pooling: Pooling = "max",
        pool_stride: int | None = None,
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
        mean, std = input_statistics(mean, std, normalize, default=lpips_normalization(version))
        super().__init__(backbone, taps, mean, std, pooling=pooling, pool_stride=pool_stride)
        self.heads = LinearHeads(load_lpips_heads(net, version, channels, head_weights))
        self.net, self.version, self.spatial = net, version, spatial

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
        reduction: ``"mean"`` | ``"sum"`` over all values, or ``"none"``.
        weights: trunk weights: ``"imagenet"`` (default) | path | ``None`` (random, tests only).
        head_weights: path to a linear-head file in ``lpips``' format; ``None`` for the shipped one.
        input_range: value range of the images; ``(0, 1)`` default. (``lpips.LPIPS`` expects
            ``(-1, 1)``: pass ``input_range=(-1, 1)`` to feed the same tensors.)
        grayscale, check_inputs: as for :class:`~perceptual_loss.PerceptualLoss`.
        mask_mode: ``"area"`` | ``"inside"``, as for :class:`~perceptual_loss.PerceptualLoss`.
        mean, std, normalize: the trunk's input normalisation; default LPIPS' own (ImageNet's
            for v0.1, ``[-1, 1]`` input for v0.0). ``piq.LPIPS(mean=..., std=...)`` sets it too.
            Another one is no longer LPIPS as calibrated: for experiments and parity only.
        pooling, pool_stride: as for :class:`~perceptual_loss.PerceptualLoss`;
            ``pooling="avg"`` is ``piq.LPIPS(replace_pooling=True)`` (with ``net="vgg"``).

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
        reduction: Reduction = "mean",
        weights: WeightsArg = "imagenet",
        head_weights: WeightsArg = None,
        input_range: tuple[float, float] = (0.0, 1.0),
        grayscale: Grayscale = None,
        check_inputs: bool = True,
        mask_mode: MaskMode = "area",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalize: Normalize = True,
        pooling: Pooling = "max",
        pool_stride: int | None = None,
    ) -> None:
        super().__init__(
            LPIPSComparison(net, version, spatial, head_weights, mean, std, normalize, pooling, pool_stride),
            weights=weights, input_range=input_range, reduction=reduction, check_inputs=check_inputs, grayscale=grayscale,
            mask_mode=mask_mode,
        )  # fmt: skip
