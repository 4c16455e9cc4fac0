"""The four classic loss networks (VGG16, VGG19, AlexNet, SqueezeNet 1.1) as sliced ``features``.

Their tap tables map the names the perceptual-loss literature uses to an index in torchvision's
``model.features`` (so ``relu3_3`` of VGG16 is torchvision's node ``features.15``):

- ``vgg16`` / ``vgg19``: ``convB_I`` (pre-activation), ``reluB_I`` and ``poolB`` for block ``B``
  and layer ``I``, e.g. VGG16 ``relu3_3`` is index 15; VGG19 ``conv5_4`` is 34, ``relu5_4`` 35.
- ``alexnet``: ``conv1..conv5``, ``relu1..relu5``, ``pool1``, ``pool2``, ``pool5``.
- ``squeezenet1_1``: ``conv1``, ``relu1``, ``pool1``, ``fire2..fire9`` (outputs of the Fire
  modules, post-activation), ``pool2``, ``pool3``.

When every tap lies in ``features``, the trunk is ``features[: deepest + 1]`` run as a loop (no
tracing), with memory-saving pools and Fire modules; ``conv`` taps hold pre-activation values
although torchvision's ReLUs work in place: the ReLU right after a tapped convolution is made
out-of-place (only that one, so memory stays as the bare net's). Taps outside ``features``
(``logits``, ``classifier.4``, ...) go through the traced path of :mod:`.graph`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.models.squeezenet import Fire

from ..frozen import mode_free
from ..weights import WeightsArg, load_backbone_state
from .layers import L2Pool2d, hann_filter, saving_less_for_backward

logger = logging.getLogger(__name__)


def _vgg_taps(convs_per_block: Sequence[int]) -> dict[str, int]:
    taps: dict[str, int] = {}
    index = 0
    for block, convs in enumerate(convs_per_block, start=1):
        for layer in range(1, convs + 1):
            taps[f"conv{block}_{layer}"] = index
            taps[f"relu{block}_{layer}"] = index + 1
            index += 2
        taps[f"pool{block}"] = index
        index += 1
    return taps


# fmt: off
TAPS: dict[str, dict[str, int]] = {
    "vgg16": _vgg_taps((2, 2, 3, 3, 3)),
    "vgg19": _vgg_taps((2, 2, 4, 4, 4)),
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

L2_POOLED: dict[str, tuple[str, tuple[int, ...]]] = {"vgg16_l2pool": ("vgg16", (4, 9, 16, 23))}
"""Variants: name -> (torchvision model whose weights it uses, ``features`` indices whose max-pool
becomes an :class:`~.layers.L2Pool2d`). ``vgg16_l2pool`` is DISTS' trunk (pools 1-4)."""
TAPS.update({name: TAPS[base] for name, (base, _) in L2_POOLED.items()})

mode_free(Fire)  # conv, ReLU, cat: the same in both modes

_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": models.vgg16,
    "vgg19": models.vgg19,
    "alexnet": models.alexnet,
    "squeezenet1_1": models.squeezenet1_1,
}


def weights_name(backbone: str) -> str:
    """The torchvision model whose weights ``backbone`` loads (``vgg16`` for ``vgg16_l2pool``)."""
    return L2_POOLED[backbone][0] if backbone in L2_POOLED else backbone


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


def _erode(layer: nn.Module, mask: Tensor) -> Tensor:
    """The minimum of ``mask`` over each output position's window of ``layer`` (a min-pool)."""
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
        stride = layer.stride if layer.stride is not None else layer.kernel_size
        ceil_mode = isinstance(layer, nn.MaxPool2d) and layer.ceil_mode
        window = (layer.kernel_size, stride, layer.padding, layer.dilation)
        return -F.max_pool2d(-mask, *window, ceil_mode=ceil_mode)  # type: ignore[arg-type]
    if isinstance(layer, L2Pool2d):
        return -F.max_pool2d(-mask, 3, 2, 1)
    if isinstance(layer, Fire):  # its widest path: the 3x3 expand convolution
        return -F.max_pool2d(-mask, 3, 1, 1)
    return mask


def build_classic_trunk(backbone: str, indices: Mapping[str, int], weights: WeightsArg) -> tuple[TappedSequential, int]:
    """The frozen-to-be trunk for ``{tap: features index}`` and the smallest input size it takes."""
    last = max(indices.values())
    tap_at: dict[int, list[str]] = {}
    for name, index in indices.items():
        tap_at.setdefault(index, []).append(name)
    # Build on the meta device: no memory and no init for the layers we drop (the classifier
    # of VGG alone is 120M parameters), yet the full state dict's keys and shapes to check.
    base = weights_name(backbone)
    l2_pooled = [i for i in L2_POOLED.get(backbone, ("", ()))[1] if i <= last]
    with torch.device("meta"):
        full = _CONSTRUCTORS[base](weights=None)
        layers = TappedSequential(saving_less_for_backward(full.features[: last + 1]), tap_at)  # type: ignore[index,arg-type]
        for index in l2_pooled:
            layers[index] = L2Pool2d()
    min_size = _min_input_size(layers, last)
    state = load_backbone_state(base, weights, full.state_dict())
    layers = layers.to_empty(device="cpu")
    windows = {f"{index}.window": hann_filter() for index in l2_pooled}
    if state is None:
        _random_init(layers)
        layers.load_state_dict({**layers.state_dict(), **windows}, strict=True)
        logger.info("%s initialised with random weights (weights=None): for tests only", backbone)
    else:
        prefix = "features."
        kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and int(k.split(".")[1]) <= last}
        layers.load_state_dict({**kept, **windows}, strict=True)
    for index in tap_at:
        after = index + 1
        relu = layers[after] if after < len(layers) else None
        if isinstance(layers[index], nn.Conv2d) and isinstance(relu, nn.ReLU):
            relu.inplace = False
    return layers, min_size


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
    """torchvision's VGG init for every conv (weights=None is for tests only)."""
    for module in layers.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
