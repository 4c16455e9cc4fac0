"""DISTS (Ding, Ma, Wang, Simoncelli, TPAMI 2020) as a frozen, differentiable loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from typing_extensions import Unpack

from ..backbones import IMAGENET_MEAN, IMAGENET_STD, INPUT, Features, Pooling, ShortSide
from ..distances import dists_distance
from ..frozen import FrozenModule
from ..weights import DISTS_CHANNELS, WeightsArg, load_dists_weights
from ._base import Comparison, FeatureLoss
from .options import STATISTICS_OPTIONS, ReadOptions, StatisticsOptions, check_options, split_options

DISTS_BACKBONE = "vgg16"
DISTS_POOLING: Pooling = "l2"
DISTS_TAPS = (INPUT, "relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
"""DISTS' six stages: the image in [0, 1] itself, then VGG16 with L2-pools instead of max-pools."""


class DISTSOptions(StatisticsOptions, ReadOptions, total=False):
    """The shared options DISTS takes: all but ``resize`` (its own: a short side), ``pooling`` and
    ``pool_stride`` (its L2-pools)."""


class DISTSWeights(FrozenModule):
    """DISTS' trained ``alpha`` (structure) and ``beta`` (texture) weights, divided by their sum,
    split per stage: frozen, the same in both modes, out of ``state_dict``."""

    def __init__(self, alpha: Tensor, beta: Tensor) -> None:
        super().__init__()
        total = alpha.sum() + beta.sum()
        self.alpha = nn.ParameterList(
            [nn.Parameter(a.flatten()) for a in torch.split(alpha / total, list(DISTS_CHANNELS), dim=1)]
        )
        self.beta = nn.ParameterList(
            [nn.Parameter(b.flatten()) for b in torch.split(beta / total, list(DISTS_CHANNELS), dim=1)]
        )
        self.freeze()


class DISTSComparison(Comparison):
    """DISTS from the six stages' features; see :func:`perceptual_loss.dists_distance`.

    Looks at VGG16 with L2-pools in place of its max-pools (``pooling="l2"``) with ImageNet
    normalisation, plus the ``input`` tap. The prepared target is its features.

    Args:
        dists_weights: path to an alpha/beta file; ``None`` for the one ``dists-pytorch`` ships.
        resize: ``None`` (default, as ``DISTS_pytorch.DISTS``) | a short-side size such as 256
            (the reference script's preprocessing; see :class:`DISTSLoss`).
        **view: ``mean``, ``std``, ``normalize``: the trunk's input normalisation; default
            ImageNet's, DISTS' own. DISTS' pools are its L2-pools, and its resize is a short side.
    """

    def __init__(
        self, dists_weights: WeightsArg = None, resize: int | None = None, **view: Unpack[StatisticsOptions]
    ) -> None:
        check_options(view, "DISTSComparison", STATISTICS_OPTIONS)
        resized = None if resize is None else ShortSide(resize)
        super().__init__(
            DISTS_BACKBONE, DISTS_TAPS, (IMAGENET_MEAN, IMAGENET_STD), resize=resized, pooling=DISTS_POOLING, **view
        )
        self.weights = DISTSWeights(*load_dists_weights(dists_weights))

    def forward(
        self, pred_features: Features, target: Features, image_size: tuple[int, int], masks: Features | None = None
    ) -> Tensor:
        alpha = dict(zip(self.taps, self.weights.alpha, strict=True))
        beta = dict(zip(self.taps, self.weights.beta, strict=True))
        return dists_distance(pred_features, target, alpha, beta, masks)


class DISTSLoss(FeatureLoss):
    """Deep Image Structure and Texture Similarity as a loss; equal to ``DISTS_pytorch.DISTS`` (1e-5).

    ``DISTS(x, y) = 1 - sum_l sum_c (alpha_lc S1_lc + beta_lc S2_lc)`` over the image and VGG16's
    ``relu1_2 .. relu5_3`` computed with L2-pools (``sqrt(hann3x3 * x^2 + eps)``) in place of
    max-pools; ``S1`` compares per-channel means, ``S2`` variances and covariance (see
    :func:`perceptual_loss.dists_distance`). The trained alpha/beta come from the file the
    ``dists-pytorch`` package ships (``pip install 'perceptual-loss[dists]'``), loaded strictly.

    Differences from the peers, on purpose: statistics and the L2-pool's square root run in
    float32 under autocast (fp16's 1e-12 underflows there, and gradients went NaN); nothing is
    rebuilt per call (torchmetrics builds the VGG on every ``update``); and there is no hidden
    resize: ``piq.DISTS`` always resizes to a short side of 256 without antialiasing (0.195
    instead of the reference's 0.164 on the same pair), while here ``resize=None`` feeds the
    images as they are, like ``DISTS_pytorch.DISTS``, and ``resize=256`` does what the
    reference's own script does (shrink the short side to 256 if longer, antialiased).

    Args:
        dists_weights: path to an alpha/beta file; ``None`` for the shipped one.
        resize: ``None`` | a short-side size, e.g. 256.
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`) but
            ``pooling`` and ``pool_stride`` (DISTS' pools are its L2-pools). ``weights`` is the
            VGG16 trunk's: ``"imagenet"`` is torchvision's ``vgg16-397923af.pth``, what DISTS was
            trained on. ``mean``, ``std``, ``normalize`` default to ImageNet's (DISTS' own;
            ``piq.DISTS(mean=..., std=...)`` sets them too); others are no longer DISTS as
            trained (experiments and parity only).

    Shape:
        - pred, target: ``(N, 3, H, W)`` in ``input_range``.
        - Output: ``()``, or ``(N,)`` with ``reduction="none"``.

    Examples:
        >>> loss = DISTSLoss(weights=None)
        >>> x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
        >>> bool(loss(x, x).abs() < 1e-6), loss(x, y).shape
        (True, torch.Size([]))
    """

    def __init__(
        self, dists_weights: WeightsArg = None, resize: int | None = None, **options: Unpack[DISTSOptions]
    ) -> None:
        view, read = split_options(options, "DISTSLoss", refused=("resize", "pooling", "pool_stride"))
        super().__init__(DISTSComparison(dists_weights, resize, **view), **read)
