"""The classic loss networks (the VGGs, AlexNet, SqueezeNet 1.1) as sliced ``features``.

Their tap tables map the names the perceptual-loss literature uses to an index in torchvision's
``model.features`` (so ``relu3_3`` of VGG16 is torchvision's node ``features.15``):

- ``vgg11`` / ``vgg13`` / ``vgg16`` / ``vgg19``: ``convB_I`` (pre-activation), ``reluB_I`` and
  ``poolB`` for block ``B`` and layer ``I``, e.g. VGG16 ``relu3_3`` is index 15; VGG19
  ``conv5_4`` is 34, ``relu5_4`` 35. The BatchNorm variants (``vgg16_bn``, ...) add ``bnB_I``
  between the two: BasicSR's names.
- ``alexnet``: ``conv1..conv5``, ``relu1..relu5``, ``pool1``, ``pool2``, ``pool5``.
- ``squeezenet1_1``: ``conv1``, ``relu1``, ``pool1``, ``fire2..fire9`` (outputs of the Fire
  modules, post-activation), ``pool2``, ``pool3``.

When every tap lies in ``features``, the trunk is ``features[: deepest + 1]`` run as a loop (no
tracing), with memory-saving pools and Fire modules and frozen BatchNorm; ``conv`` and ``bn``
taps hold pre-activation values although torchvision's ReLUs work in place: the ReLU right after
a tapped layer is made out-of-place (only that one, so memory stays as the bare net's). Its
max-pools can be swapped (``pooling``: average, DISTS' L2-pool, or none) and their stride changed
(``pool_stride``), as BasicSR's and piq's extractors allow. Taps outside ``features`` (``logits``,
``classifier.4``, ...) go through the traced path of :mod:`.graph`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frozen import mode_free
from ..weights import WeightsArg, load_backbone_state
from .architectures import VGG_BLOCKS, Fire, classic_features, classic_state_shapes
from .layers import FrozenBatchNorm, L2Pool2d, hann_filter, saving_less_for_backward

logger = logging.getLogger(__name__)


def _vgg_taps(convs_per_block: Sequence[int], batch_norm: bool = False) -> dict[str, int]:
    taps: dict[str, int] = {}
    index = 0
    for block, convs in enumerate(convs_per_block, start=1):
        for layer in range(1, convs + 1):
            taps[f"conv{block}_{layer}"] = index
            if batch_norm:
                index += 1
                taps[f"bn{block}_{layer}"] = index
            taps[f"relu{block}_{layer}"] = index + 1
            index += 2
        taps[f"pool{block}"] = index
        index += 1
    return taps


# fmt: off
TAPS: dict[str, dict[str, int]] = {
    **{name: _vgg_taps(blocks) for name, blocks in VGG_BLOCKS.items()},
    **{f"{name}_bn": _vgg_taps(blocks, batch_norm=True) for name, blocks in VGG_BLOCKS.items()},
    "alexnet": {
        "conv1": 0, "relu1": 1, "pool1": 2,
        "conv2": 3, "relu2": 4, "pool2": 5,
        "conv3": 6, "relu3": 7,
        "conv4": 8, "relu4": 9,
        "conv5": 10, "relu5": 11, "pool5": 12,
    },
    "squeezenet1_1": {
        "conv1": 0, "relu1": 1, "pool1": 2,
        "fire2": 3, "fire3": 4, "pool2": 5,
        "fire4": 6, "fire5": 7, "pool3": 8,
        "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12,
    },
}
# fmt: on
"""Tap name -> index in torchvision's ``model.features``, per classic backbone."""

Pooling = Literal["max", "avg", "l2", "none"]
POOLINGS = ("max", "avg", "l2", "none")
"""What the classic trunks' max-pools become: themselves (``"max"``), ``nn.AvgPool2d`` of the
same window (``"avg"``: piq's ``replace_pooling``, Gatys et al.'s advice for style), DISTS'
:class:`~.layers.L2Pool2d` (``"l2"``; VGG's 2x2 pools only), or nothing (``"none"``: BasicSR's
``remove_pooling``)."""


def check_pooling(backbone: str, pooling: str, pool_stride: int | None) -> None:
    """Raise if ``pooling`` / ``pool_stride`` are unknown or do not apply to ``backbone``'s pools."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLINGS}.")
    if pool_stride is not None and (
        isinstance(pool_stride, bool) or not isinstance(pool_stride, int) or pool_stride < 1
    ):
        raise ValueError(f"pool_stride must be a positive int (None keeps the network's); got {pool_stride!r}.")
    if pooling == "none" and pool_stride is not None:
        raise ValueError("pool_stride with pooling='none': there is no pool left to set the stride of.")
    if pooling == "l2" and backbone in TAPS and not backbone.startswith("vgg"):
        raise ValueError(
            f"pooling='l2' is DISTS' L2-pool in place of VGG's 2x2 max-pools; {backbone}'s pools are 3x3. Use "
            "pooling='avg' or 'max', or a VGG."
        )


def aliases(backbone: str) -> dict[str, str]:
    """``{"relu3_3": "features.15", ...}``: the classic names as torchvision node names."""
    return {name: f"features.{index}" for name, index in TAPS.get(backbone, {}).items()}


def features_index(backbone: str, tap: str) -> int | None:
    """Index in ``model.features`` of a classic name or a ``features.N`` node; ``None`` otherwise."""
    table = TAPS[backbone]
    if tap in table:
        return table[tap]
    prefix, _, index = tap.partition(".")
    if prefix == "features" and index.isdigit() and int(index) < len(table):
        return int(index)
    return None


@mode_free
class TappedSequential(nn.Sequential):
    """``model.features[: deepest + 1]`` that returns ``{tap: output}`` of the tapped layers."""

    def __init__(self, layers: nn.Sequential, tap_at: Mapping[int, Sequence[str]]) -> None:
        super().__init__(*layers)
        self.tap_at = {index: tuple(names) for index, names in tap_at.items()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        features: dict[str, Tensor] = {}
        for index, layer in enumerate(self):
            x = layer(x)
            names = self.tap_at.get(index)
            if names is not None:
                for name in names:
                    features[name] = x
        return features

    def inside_masks(self, mask: Tensor) -> dict[str, Tensor]:
        """``{tap: mask}`` of the feature positions whose whole receptive field lies in ``mask``.

        The mask is eroded layer by layer along the network: a convolution or pool takes the
        minimum over its window (zero padding is no pixel, so it does not count), activations
        keep it. For a binary mask a position is 1 exactly when no pixel outside the mask can
        reach it; a soft mask gives the smallest weight in the receptive field.
        """
        masks: dict[str, Tensor] = {}
        m = mask
        for index, layer in enumerate(self):
            m = _erode(layer, m)
            for name in self.tap_at.get(index, ()):
                masks[name] = m
        return masks


Window = tuple[int, int, int, int, bool]
"""``(kernel, stride, padding, dilation, ceil_mode)`` of a layer, the same along both axes."""


def layer_window(layer: nn.Module) -> Window | None:
    """The window each output position of a classic trunk's ``layer`` reads, or ``None`` for a
    layer that keeps positions (activations, BatchNorm)."""
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        ceil_mode = isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)) and layer.ceil_mode
        pairs = [layer.kernel_size, layer.stride or layer.kernel_size, layer.padding, getattr(layer, "dilation", 1)]
        kernel, stride, padding, dilation = (int(v[0]) if isinstance(v, (tuple, list)) else int(v) for v in pairs)  # type: ignore[arg-type]
        return kernel, stride, padding, dilation, ceil_mode
    if isinstance(layer, L2Pool2d):
        return 3, layer.stride, 1, 1, False
    if isinstance(layer, Fire):  # its widest path: the 3x3 expand convolution
        return 3, 1, 1, 1, False
    return None


def _erode(layer: nn.Module, mask: Tensor) -> Tensor:
    """The minimum of ``mask`` over each output position's window of ``layer`` (a min-pool)."""
    window = layer_window(layer)
    if window is None:
        return mask
    kernel, stride, padding, dilation, ceil_mode = window
    return -F.max_pool2d(-mask, kernel, stride, padding, dilation, ceil_mode=ceil_mode)


def build_classic_trunk(
    backbone: str,
    indices: Mapping[str, int],
    weights: WeightsArg,
    pooling: Pooling = "max",
    pool_stride: int | None = None,
) -> tuple[TappedSequential, int]:
    """The frozen-to-be trunk for ``{tap: features index}`` and the smallest input size it takes.

    Args:
        backbone: a key of :data:`TAPS`.
        indices: ``{tap: index in features}``.
        weights: see :func:`~perceptual_loss.weights.load_backbone_state`.
        pooling, pool_stride: what the max-pools become (:data:`POOLINGS`) and their stride
            (``None``: the network's own), checked with :func:`check_pooling`.
    """
    last = max(indices.values())
    tap_at: dict[int, list[str]] = {}
    for name, index in indices.items():
        tap_at.setdefault(index, []).append(name)
    # Build on the meta device: no memory and no init for the layers we drop, yet the full state
    # dict's keys and shapes to check the file against.
    with torch.device("meta"):
        full = classic_features(backbone).eval()  # BatchNorm: eval arithmetic in the size search
        expected = classic_state_shapes(backbone, full)
        features = _replace_pools(full[: last + 1], pooling, pool_stride)  # type: ignore[arg-type]
        removed = sorted(name for name, index in indices.items() if isinstance(features[index], nn.Identity))
        if removed:
            raise ValueError(
                f"pooling='none' removes the pools, so there is no {', '.join(removed)} to tap: tap the layer before it."
            )
        layers = TappedSequential(saving_less_for_backward(features), tap_at)  # type: ignore[arg-type]
    min_size = _min_input_size(layers, last)
    state = load_backbone_state(backbone, weights, expected)
    layers = layers.to_empty(device="cpu")
    windows = {f"{i}.window": hann_filter() for i, layer in enumerate(layers) if isinstance(layer, L2Pool2d)}
    if state is None:
        _random_init(layers)
        layers.load_state_dict({**layers.state_dict(), **windows}, strict=True)
        logger.info("%s initialised with random weights (weights=None): for tests only", backbone)
    else:
        prefix = "features."
        kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and int(k.split(".")[1]) <= last}
        layers.load_state_dict({**kept, **windows}, strict=True)
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm2d):
            layers[index] = FrozenBatchNorm(layer)
    for index in tap_at:
        after = index + 1
        relu = layers[after] if after < len(layers) else None
        if isinstance(relu, nn.ReLU):  # it would overwrite the tapped conv's or BatchNorm's output
            relu.inplace = False
    return layers, min_size


def _replace_pools(features: nn.Sequential, pooling: Pooling, stride: int | None) -> nn.Sequential:
    """``features`` with each max-pool made ``pooling`` with ``stride`` (``None``: its own)."""
    for index, layer in enumerate(features):
        if not isinstance(layer, nn.MaxPool2d) or (pooling == "max" and stride is None):
            continue
        kernel, padding, ceil_mode = layer.kernel_size, layer.padding, layer.ceil_mode
        step = layer.stride if stride is None else stride
        if pooling == "max":
            features[index] = nn.MaxPool2d(kernel, step, padding, layer.dilation, ceil_mode=ceil_mode)
        elif pooling == "avg":  # padding is 0 in every classic trunk, so count_include_pad never matters
            features[index] = nn.AvgPool2d(kernel, step, padding, ceil_mode=ceil_mode)  # type: ignore[arg-type]
        elif pooling == "l2":
            features[index] = L2Pool2d(stride=2 if stride is None else stride)
        else:
            features[index] = nn.Identity()
    return features


_MIN_INPUT_SIZES: dict[tuple[str, ...], int] = {}
""":func:`_min_input_size` by the layers' reprs (which give every kernel, stride and padding)."""


def _min_input_size(layers: nn.Sequential, last: int, limit: int = 1024) -> int:
    """Smallest square input for which every tap has at least a 1x1 feature map (meta runs).

    Feature sizes never shrink as the input grows, so a binary search finds it in ~10 runs; the
    answer is remembered for the next trunk with the same layers.
    """
    key = tuple(repr(layer) for layer in list(layers)[: last + 1])
    if key not in _MIN_INPUT_SIZES:
        _MIN_INPUT_SIZES[key] = _search_min_input_size(layers, last, limit)
    return _MIN_INPUT_SIZES[key]


def _search_min_input_size(layers: nn.Sequential, last: int, limit: int) -> int:

    def fits(size: int) -> bool:
        x = torch.empty(1, 3, size, size, device="meta")
        try:
            for index, layer in enumerate(layers):
                x = layer(x)
                if index == last:
                    break
        except RuntimeError:
            return False
        return min(x.shape[-2:]) >= 1

    if not fits(limit):
        raise ValueError(f"No input size up to {limit} fits these layers.")  # pragma: no cover
    low, high = 0, limit  # fits(high), not fits(low)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _random_init(layers: nn.Module) -> None:
    """torchvision's VGG init for every conv, BatchNorm's own (weights=None is for tests only)."""
    for module in layers.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()  # weight 1, bias 0, running mean 0, variance 1
