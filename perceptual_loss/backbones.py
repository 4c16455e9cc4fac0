"""Frozen, truncated torchvision backbones that return named intermediate features ("taps").

The tap tables map a layer name to its index in torchvision's ``model.features``:

- ``vgg16`` / ``vgg19``: ``convB_I`` (pre-activation), ``reluB_I`` and ``poolB`` for block ``B``
  and layer ``I``, e.g. VGG16 ``relu3_3`` is index 15; VGG19 ``conv5_4`` is 34, ``relu5_4`` 35.
- ``alexnet``: ``conv1..conv5``, ``relu1..relu5``, ``pool1``, ``pool2``, ``pool5``.
- ``squeezenet1_1``: ``conv1``, ``relu1``, ``pool1``, ``fire2..fire9`` (outputs of the Fire
  modules, post-activation), ``pool2``, ``pool3``.

``conv`` taps hold pre-activation values although torchvision's ReLUs work in place: the ReLU right
after a tapped convolution is made out-of-place (only that one, so memory stays as the bare net).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision import models
from torchvision.models.squeezenet import Fire

from .frozen import FrozenModule
from .weights import WeightsArg, load_backbone_state

logger = logging.getLogger(__name__)

Features = dict[str, Tensor]
"""Named features of one image batch: ``{tap: (N, C_tap, H_tap, W_tap)}``."""


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


TAPS: dict[str, dict[str, int]] = {
    "vgg16": _vgg_taps((2, 2, 3, 3, 3)),
    "vgg19": _vgg_taps((2, 2, 4, 4, 4)),
    "alexnet": {
        "conv1": 0, "relu1": 1, "pool1": 2,
        "conv2": 3, "relu2": 4, "pool2": 5,
        "conv3": 6, "relu3": 7,
        "conv4": 8, "relu4": 9,
        "conv5": 10, "relu5": 11, "pool5": 12,
    },  # fmt: skip
    "squeezenet1_1": {
        "conv1": 0, "relu1": 1, "pool1": 2,
        "fire2": 3, "fire3": 4, "pool2": 5,
        "fire4": 6, "fire5": 7, "pool3": 8,
        "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12,
    },  # fmt: skip
}
"""Tap name -> index in torchvision's ``model.features``, per backbone."""

_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": models.vgg16,
    "vgg19": models.vgg19,
    "alexnet": models.alexnet,
    "squeezenet1_1": models.squeezenet1_1,
}

CHANNELS_LAST_DEVICES = ("cpu", "cuda")
"""Device types whose extractors run channels_last (measured faster there; see README)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def available_taps(backbone: str) -> list[str]:
    """The tap names of ``backbone`` in network order."""
    return list(_tap_table(backbone))


def _tap_table(backbone: str) -> dict[str, int]:
    if backbone not in TAPS:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(TAPS)}.")
    return TAPS[backbone]


class FeatureExtractor(FrozenModule):
    """A frozen torchvision backbone, truncated at its deepest tap, returning named features.

    Normalisation is inside: images in ``input_range`` are mapped to ``[0, 1]`` and then to
    ``(x - mean) / std`` per channel (ImageNet statistics by default) before the first layer.

    Args:
        backbone: ``"vgg16"`` | ``"vgg19"`` | ``"alexnet"`` | ``"squeezenet1_1"``.
        taps: layer names from :data:`TAPS` (see :func:`available_taps`).
        weights: ``"imagenet"`` (default) | path | ``None`` (random, tests only); see
            :mod:`perceptual_loss.weights`.
        input_range: ``(low, high)`` of the images passed in, e.g. ``(0, 1)`` or ``(-1, 1)``.
        mean, std: per-channel statistics applied to ``[0, 1]`` images (ImageNet's by default;
            ``(0.5,)*3, (0.5,)*3`` feeds the network ``[-1, 1]`` images, as LPIPS v0.0 did).

    Shape:
        - Input: ``(N, 3, H, W)`` with ``H, W >= min_size``, values in ``input_range``.
        - Output: ``{tap: (N, C_tap, H_tap, W_tap)}`` for each requested tap. On CPU and CUDA
          the network runs in ``torch.channels_last`` (faster on both), so the features are
          channels_last tensors: use ``reshape``/``flatten``, not ``view``, to change their shape.

    Example:
        >>> extractor = FeatureExtractor("vgg16", ["relu1_2", "relu2_2"], weights=None)
        >>> {k: tuple(v.shape) for k, v in extractor(torch.rand(2, 3, 32, 32)).items()}
        {'relu1_2': (2, 64, 32, 32), 'relu2_2': (2, 128, 16, 16)}
    """

    min_size: int
    scale: nn.Parameter
    input_range: tuple[float, float]

    def __init__(
        self,
        backbone: str,
        taps: Sequence[str],
        weights: WeightsArg = "imagenet",
        input_range: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        table = _tap_table(backbone)
        if isinstance(taps, str) or not taps:
            raise ValueError(f"taps must be a non-empty list of layer names, e.g. ['relu2_2']; got {taps!r}.")
        unknown = [t for t in taps if t not in table]
        if unknown:
            raise ValueError(f"Unknown layer name(s) {unknown} for {backbone}; valid names: {', '.join(table)}.")
        low, high = _check_range_arg(input_range)

        self.backbone = backbone
        self.taps: tuple[str, ...] = tuple(dict.fromkeys(taps))
        self.input_range = (low, high)
        self._tap_at: dict[int, str] = {table[t]: t for t in self.taps}
        last = max(self._tap_at)

        # Build on the meta device: no memory and no init for the layers we drop (the classifier
        # of VGG alone is 120M parameters), yet the full state dict's keys and shapes to check.
        with torch.device("meta"):
            full = _CONSTRUCTORS[backbone](weights=None)
            layers: nn.Sequential = _saving_less_for_backward(full.features[: last + 1])  # type: ignore[index,arg-type]
        self.min_size = _min_input_size(layers, self._tap_at)
        state = load_backbone_state(backbone, weights, full.state_dict())
        layers = layers.to_empty(device="cpu")
        if state is None:
            _random_init(layers)
            logger.info("%s initialised with random weights (weights=None): for tests only", backbone)
        else:
            kept = {k: v for k, v in state.items() if int(k.split(".", 1)[0]) <= last}
            layers.load_state_dict(kept, strict=True)
        for index, name in self._tap_at.items():
            after = index + 1
            relu = layers[after] if after < len(layers) else None
            if name.startswith("conv") and isinstance(relu, nn.ReLU):
                relu.inplace = False
        self.layers = layers

        # x_normalised = x * scale + shift  ==  ((x - low) / (high - low) - mean) / std
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        scale = 1.0 / ((high - low) * std_t)
        shift = (-low / (high - low) - mean_t) / std_t
        self.scale = nn.Parameter(scale.view(1, 3, 1, 1))
        self.shift = nn.Parameter(shift.view(1, 3, 1, 1))
        self.freeze()
        self._match_memory_format()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FeatureExtractor:
        """``.to()``, ``.cuda()``, ``.half()``, ...: then re-pick the weights' memory format."""
        super()._apply(fn, recurse)
        self._match_memory_format()
        return self

    def _match_memory_format(self) -> None:
        """Conv weights channels_last on CPU and CUDA, where :meth:`forward` feeds channels_last input.

        oneDNN runs channels_last convolutions 10-40% faster on CPU (VGG, SqueezeNet), but only
        if the weights are channels_last too: otherwise every call reorders them (time, and a
        weight-sized copy per call). cuDNN's tensor-core convolutions work in NHWC: given NCHW
        they convert every input and output (VGG16's bare step on an H100: 17.9 ms NCHW, 13.4 ms
        channels_last; see README). On other devices the weights keep the default layout.
        """
        for module in self.layers.modules():
            if isinstance(module, nn.Conv2d):
                fast = module.weight.device.type in CHANNELS_LAST_DEVICES
                layout = torch.channels_last if fast else torch.contiguous_format
                if not module.weight.is_contiguous(memory_format=layout):
                    module.weight.data = module.weight.data.contiguous(memory_format=layout)

    def forward(self, images: Tensor) -> Features:
        """Run the truncated backbone; ``images``: ``(N, 3, H, W)`` in ``input_range``."""
        x = images * self.scale + self.shift
        if x.device.type in CHANNELS_LAST_DEVICES:
            # see _match_memory_format: the features come out channels_last, and every
            # comparison is written for either layout.
            x = x.contiguous(memory_format=torch.channels_last)
        features: Features = {}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            name = self._tap_at.get(index)
            if name is not None:
                features[name] = x
        return features

    def extra_repr(self) -> str:
        return f"backbone={self.backbone!r}, taps={list(self.taps)}, input_range={self.input_range}"


def _saving_less_for_backward(layers: nn.Sequential) -> nn.Sequential:
    """Swap torchvision's max-pools and Fire modules for ones that compute the same values and
    gradients but keep less for backward (see :class:`MaxPool2dRecomputingIndices`,
    :class:`FireSharingOutput`). Parameter names and shapes are unchanged."""
    for index, layer in enumerate(layers):
        if type(layer) is nn.MaxPool2d and not layer.return_indices:
            layers[index] = MaxPool2dRecomputingIndices(
                layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode
            )
        elif type(layer) is Fire:
            layers[index] = FireSharingOutput(
                layer.inplanes, layer.squeeze.out_channels, layer.expand1x1.out_channels, layer.expand3x3.out_channels
            )
    return layers


class _MaxPoolRecomputingIndices(torch.autograd.Function):
    """``max_pool2d`` that saves its input instead of the argmax, and recomputes the argmax in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.pool_args = (kernel, stride, padding, dilation, ceil_mode)
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode = ctx.pool_args
        _, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, kernel, stride, padding, dilation, ceil_mode, indices)
        return grad_x, None, None, None, None, None


class MaxPool2dRecomputingIndices(nn.MaxPool2d):
    """``nn.MaxPool2d`` that keeps no int64 argmax for backward; it recomputes it there instead.

    torchvision's pool keeps both its input and the argmax. Its input is kept anyway (by the ReLU
    or Fire module before it, which are the same tensor), so this pool costs no memory for
    backward at all, instead of 8 bytes per output element (about a tenth of VGG's activation
    memory), for one more pooling pass in backward. Values and gradients are identical to
    ``nn.MaxPool2d``'s.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stride = self.stride if self.stride is not None else self.kernel_size
        # (kernel, stride, padding, dilation) as the lists aten wants, built once, not per call.
        self._pool_args = [list(_pair(a)) for a in (self.kernel_size, stride, self.padding, self.dilation)]

    def forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        return _MaxPoolRecomputingIndices.apply(x, *self._pool_args, self.ceil_mode)


class _ReLUCat(torch.autograd.Function):
    """``relu(cat([a, b], dim=1))`` that saves only its output: the ReLU's mask is ``output > 0``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:  # type: ignore[override]
        output = torch.cat([a, b], dim=1).relu_()
        ctx.save_for_backward(output)
        ctx.split = a.shape[1]
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, output, 0)  # what nn.ReLU's backward runs
        return grad[:, : ctx.split], grad[:, ctx.split :]


class FireSharingOutput(Fire):
    """torchvision's SqueezeNet ``Fire`` whose expand activations are not kept twice for backward.

    ``Fire`` ends in ``cat([relu(expand1x1(s)), relu(expand3x3(s))])``: autograd keeps both ReLU
    outputs for their backward, and the next layer keeps the concatenation, a copy of the same
    values. Here the ReLU is applied to the concatenation and its backward reads the mask from
    that one tensor, which the next layer keeps anyway: a Fire module's output size less memory
    per module. Values, gradients and parameter names are identical to ``Fire``'s.
    """

    def forward(self, x: Tensor) -> Tensor:
        squeezed = self.squeeze_activation(self.squeeze(x))
        expanded = self.expand1x1(squeezed), self.expand3x3(squeezed)
        if torch.is_grad_enabled() and squeezed.requires_grad:
            return _ReLUCat.apply(*expanded)
        return torch.cat(expanded, dim=1).relu_()


def _check_range_arg(input_range: Sequence[float]) -> tuple[float, float]:
    try:
        if isinstance(input_range, (str, bytes)):
            raise TypeError
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be a pair (low, high) such as (0, 1) or (-1, 1); got {input_range!r}.") from None
    if not high > low:
        raise ValueError(f"input_range must have low < high, e.g. (0, 1); got {input_range!r}.")
    return low, high


def _min_input_size(layers: nn.Sequential, tap_at: Mapping[int, str], limit: int = 1024) -> int:
    """Smallest square input for which every tap has at least a 1x1 feature map (meta run)."""
    last = max(tap_at)
    for size in range(1, limit + 1):
        x = torch.empty(1, 3, size, size, device="meta")
        try:
            for index, layer in enumerate(layers):
                x = layer(x)
                if index == last:
                    break
        except RuntimeError:
            continue
        if min(x.shape[-2:]) >= 1:
            return size
    raise ValueError(f"No input size up to {limit} fits these layers.")  # pragma: no cover


def _random_init(layers: nn.Module) -> None:
    """torchvision's VGG init for every conv (weights=None is for tests only)."""
    for module in layers.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
