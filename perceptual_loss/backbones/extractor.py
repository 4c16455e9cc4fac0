"""``FeatureExtractor``: one frozen backbone, cut after its deepest tap, returning named features."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..frozen import FrozenModule
from ..weights import InvalidWeightsError, WeightsArg, load_backbone_state
from . import classic
from .classic import Pooling
from .inputs import IMAGES, InputSpec, input_spec
from .registry import (
    Backbone,
    Normalize,
    backbone_name,
    build_model,
    check_backbone_name,
    classic_indices,
    default_normalization,
    input_statistics,
    native_size,
)
from .tokens import TokenLayout, batch_first, split_tap, token_layout

if TYPE_CHECKING:
    from . import graph  # imported where used: the classic trunks need neither it nor torchvision

logger = logging.getLogger(__name__)

Features = dict[str, Tensor]
"""Named features of one image batch: ``{tap: (N, C_tap, H_tap, W_tap)}`` (``(N, C)`` for logits,
``(N, L, C)`` for a transformer's tokens)."""

INPUT = "input"
"""The tap of the image itself, resized if ``resize`` and mapped to ``[0, 1]`` (DISTS' stage 0)."""
INSIDE_UNSUPPORTED = (
    "mask_mode='inside' needs the receptive fields of the classic backbones (the VGGs, alexnet, squeezenet1_1) "
    "with taps in their features, run without resize; {backbone} is not one: use mask_mode='area'."
)


@dataclass(frozen=True)
class ShortSide:
    """Resize so that the shorter side is ``size`` (aspect ratio kept), only if it is longer.

    DISTS' reference script does this with ``size=256`` before scoring; ``resize=224`` (an int)
    instead makes both sides 224, as MaskBit and TiTok do.
    """

    size: int


@dataclass(frozen=True)
class MultipleOf:
    """Resize each side to the nearest multiple of ``size`` (at least ``size``): whole patches.

    For trunks that take any size in whole patches (timm's ViTs with ``dynamic_img_size=True``,
    DINOv2): ``MultipleOf(14)`` turns a 100x150 image into 98x154, leaving sizes that are already
    multiples untouched. The aspect ratio is kept up to a patch.
    """

    size: int


Resize = int | tuple[int, int] | ShortSide | MultipleOf | None
"""``None`` (images go in as they are) | ``size`` (square) | ``(height, width)`` |
``ShortSide(size)`` | ``MultipleOf(patch)``."""
ResizePolicy = tuple[int, int] | ShortSide | MultipleOf | None
"""A checked :data:`Resize`."""

CHANNELS_LAST_DEVICES = ("cpu", "cuda")
"""Device types whose extractors run channels_last (measured faster there; see README)."""


class FeatureExtractor(FrozenModule):
    """A frozen backbone, truncated at its deepest tap, returning named features.

    Normalisation is inside: images in ``input_range`` are (optionally) resized, mapped to
    ``[0, 1]`` and then to ``(x - mean) / std`` per channel before the first layer.

    The classic networks (the VGGs with and without BatchNorm, ``alexnet``, ``squeezenet1_1``) run
    as a loop over ``model.features`` when every tap lies there; every other backbone, tap
    (``logits``) or module runs as a graph traced by ``torch.fx`` (see
    :mod:`perceptual_loss.backbones.graph`); a module that torch.fx cannot trace (timm's,
    open_clip's and transformers' ViTs) runs its own forward with hooks on the tapped submodules,
    stopped after the deepest one (see :mod:`perceptual_loss.backbones.hooks`). Transformer
    tokens become patch maps (see :mod:`perceptual_loss.backbones.tokens`). Either
    way nothing after the deepest tap is run or kept, BatchNorm and dropout stay in eval mode
    whatever a parent does, nothing is in ``state_dict``, and tapped pre-activations are never
    overwritten by an in-place ReLU.

    Args:
        backbone: a torchvision classification model name (``"vgg16"``, ``"resnet50"``,
            ``"convnext_small"``, ``"vit_b_16"``, ...; see :func:`list_backbones`), or an
            ``nn.Module`` of your own (it is copied, never changed, and never saved).
        taps: tap names (see :func:`available_taps`): torchvision node names such as ``layer2``
            or ``features.15``, ``logits``, or the classic aliases (``relu3_3``, ``conv5_4``); for
            a module torch.fx cannot trace, its submodule names (``blocks.5``). A token tap is
            the patch map; ``"blocks.5:cls"`` is its class token, ``"blocks.5:tokens"`` all of
            its tokens as they are.
        weights: ``"imagenet"`` (default: torchvision's ImageNet weights; ``IMAGENET1K_V1`` for
            vgg16, vgg19, alexnet and squeezenet1_1, ``DEFAULT`` for the others) | a weights enum member name such as
            ``"IMAGENET1K_V2"`` | path | ``None`` (random, tests only); see
            :mod:`perceptual_loss.weights`. For a module: its own weights, unless a path is
            given, whose state dict is loaded strictly into the copy.
        input_range: ``(low, high)`` of the images passed in, e.g. ``(0, 1)`` or ``(-1, 1)``.
        mean, std: per-channel statistics applied to ``[0, 1]`` images; default the weights' own
            (ImageNet's for torchvision's; a module's own where it says: timm's
            ``pretrained_cfg``, open_clip's ``image_mean``, transformers' CLIP and SigLIP);
            ``(0.5,)*3, (0.5,)*3`` feeds the network ``[-1, 1]`` images, as LPIPS v0.0 did.
        normalize: ``False`` feeds the network ``[0, 1]`` images with no mean/std at all
            (BasicSR's ``use_input_norm=False``); ``"imagenet"``, ``"clip"`` or ``"siglip"``
            names the statistics (:data:`~perceptual_loss.backbones.STATISTICS`); not together
            with ``mean``/``std``.
        pooling: what the classic trunks' max-pools become: ``"max"`` (default, as trained) |
            ``"avg"`` (average pooling of the same window: piq's ``replace_pooling``, Gatys et
            al.'s choice for style) | ``"l2"`` (DISTS' L2-pool; VGGs) | ``"none"`` (removed:
            BasicSR's ``remove_pooling``).
        pool_stride: the pools' stride (BasicSR's ``pooling_stride``); ``None``: the network's.
        resize: ``None`` (default: images go in as they are) | ``size`` | ``(height, width)``:
            images are resized bilinearly with antialiasing first (MaskBit/TiTok use 224);
            :class:`ShortSide` ``(256)`` shrinks the shorter side to 256 (DISTS' script);
            :class:`MultipleOf` ``(14)`` rounds each side to whole patches (dynamic-size ViTs).
            Backbones that take one size only (ViT: 224) need it unless the images have that size.
            A fixed size is also the only size the backbone is probed at.

    Shape:
        - Input: ``(N, 3, H, W)`` with ``H, W >= min_size`` (exactly ``fixed_size`` if set),
          values in ``input_range``.
        - Output: ``{tap: features}``: ``(N, C, H', W')`` for convolutional taps and token taps
          (patch maps), ``(N, C)`` for ``logits`` and ``:cls``, ``(N, L, C)`` for ``:tokens``. On CPU and CUDA the network runs in
          ``torch.channels_last`` (faster on both), so 4-D features are channels_last tensors:
          use ``reshape``/``flatten``, not ``view``, to change their shape.

    Examples:
        >>> extractor = FeatureExtractor("vgg16", ["relu1_2", "relu2_2"], weights=None)
        >>> {k: tuple(v.shape) for k, v in extractor(torch.rand(2, 3, 32, 32)).items()}
        {'relu1_2': (2, 64, 32, 32), 'relu2_2': (2, 128, 16, 16)}
        >>> resnet = FeatureExtractor("resnet18", ["layer2", "logits"], weights=None, resize=64)
        >>> {k: tuple(v.shape) for k, v in resnet(torch.rand(2, 3, 50, 40)).items()}
        {'layer2': (2, 128, 8, 8), 'logits': (2, 1000)}
    """

    min_size: int
    fixed_size: int | None
    scale: nn.Parameter
    input_range: tuple[float, float]

    def __init__(
        self,
        backbone: Backbone,
        taps: Sequence[str],
        weights: WeightsArg = "imagenet",
        input_range: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize: Resize = None,
        normalize: Normalize = True,
        pooling: Pooling = "max",
        pool_stride: int | None = None,
    ) -> None:
        super().__init__()
        mean, std = input_statistics(mean, std, normalize)
        if isinstance(taps, str) or not taps:
            raise ValueError(f"taps must be a non-empty list of layer names, e.g. ['relu2_2']; got {taps!r}.")
        low, high = _check_range_arg(input_range)
        self.resize = check_resize(resize)
        self.backbone = backbone_name(backbone)
        self.taps: tuple[str, ...] = tuple(dict.fromkeys(str(t) for t in taps))
        self.input_range = (low, high)

        self._input_tap = INPUT in self.taps
        layer_taps = tuple(t for t in self.taps if t != INPUT)
        if not layer_taps:
            raise ValueError(f"taps must name at least one layer besides {INPUT!r}; got {list(taps)}.")
        views = {tap: split_tap(tap) for tap in layer_taps}
        trunk_taps = tuple(dict.fromkeys(base for base, _ in views.values()))
        indices = classic_indices(backbone, trunk_taps)
        self.layers: nn.Module
        classic.check_pooling(self.backbone, pooling, pool_stride)
        if indices is None and (pooling != "max" or pool_stride is not None):
            raise ValueError(
                f"pooling= and pool_stride= change the max-pools of the classic trunks (the VGGs, alexnet, "
                f"squeezenet1_1) with every tap in their features; {self.backbone} with taps {list(layer_taps)} is "
                "traced from torchvision's graph. Use the network's own pools, or pass an nn.Module with the pools "
                "you want."
            )
        self.pooling, self.pool_stride = pooling, pool_stride
        self.token_layouts: dict[str, TokenLayout] = {}
        """``{tap: layout}`` of the token taps read as patch maps (see :mod:`.tokens`)."""
        self._reads: dict[str, tuple[str, str, TokenLayout | None]] = {}
        if indices is not None:
            if any(view != "map" for _, view in views.values()):
                raise ValueError(f"':cls' and ':tokens' read transformer tokens; {self.backbone} has none.")
            self.layers, min_size = classic.build_classic_trunk(str(backbone), indices, weights, pooling, pool_stride)
            fixed_size: int | None = None
            self.tap_dims = dict.fromkeys(self.taps, 4)
        else:
            self.layers, info = _graph_trunk(backbone, trunk_taps, weights, self.resize)
            min_size, fixed_size = info.min_size, info.fixed_size
            self.tap_dims = {INPUT: 4} if self._input_tap else {}
            for tap, (base, view) in views.items():
                self.tap_dims[tap] = self._plan_read(tap, base, view, info)
        self.fixed_size, self.min_size = _input_size_policy(self.backbone, self.resize, min_size, fixed_size)
        self.input_spec = input_spec(backbone) if isinstance(backbone, nn.Module) else IMAGES
        """The input the trunk takes: RGB images, or volumes ``(N, C, D, H, W)`` for a 3-D module."""
        if self.input_spec.spatial_dims == 3 and self.resize is not None:
            raise ValueError(
                f"resize= resizes 2-D images; {self.backbone} takes volumes: resample them before the loss."
            )

        if mean is None or std is None:
            default_mean, default_std = default_normalization(backbone, weights)
            mean, std = default_mean if mean is None else mean, default_std if std is None else std
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        # x_normalised = x * scale + shift  ==  ((x - low) / (high - low) - mean) / std, computed in
        # float64 and rounded once to the parameters' dtype (again on every .to(dtype): see _apply).
        mean_t, std_t = torch.tensor(self.mean, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
        mean_t, std_t, shape = _statistics(self.backbone, self.input_spec, mean_t, std_t)
        self._affine = (
            (1.0 / ((high - low) * std_t)).view(shape),
            ((-low / (high - low) - mean_t) / std_t).view(shape),
        )
        device = next(iter(self.layers.parameters()), torch.empty(0)).device
        self.scale = nn.Parameter(self._affine[0].to(device, torch.float32))
        self.shift = nn.Parameter(self._affine[1].to(device, torch.float32))
        self.freeze()
        self._match_memory_format()

    def _plan_read(self, tap: str, base: str, view: str, info: graph.GraphInfo) -> int:
        """How ``tap`` is read from the trunk's ``base`` output (see :mod:`.tokens`); returns its ndim."""
        shape = info.shapes[base]
        layout = token_layout(self.layers, base, shape, info.size) if len(shape) == 3 and view == "map" else None
        if view != "map" and len(shape) != 3:
            raise ValueError(
                f"Tap {tap!r}: ':{view}' reads transformer tokens (N, L, D), but {base!r} of {self.backbone} gives "
                f"{len(shape)}-D output. Tap {base!r} without the suffix."
            )
        if layout is not None:
            self.token_layouts[tap] = layout
        if view != "map" or layout is not None:
            self._reads[tap] = (base, view, layout)
        return {"cls": 2, "tokens": 3}.get(view, 4 if layout is not None else len(shape))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FeatureExtractor:
        """``.to()``, ``.cuda()``, ``.half()``, ...: then re-pick the weights' memory format, and
        round the normalisation anew from float64 (``.double()`` gets float64-exact constants)."""
        super()._apply(fn, recurse)
        for parameter, exact in ((self.scale, self._affine[0]), (self.shift, self._affine[1])):
            if parameter.is_floating_point() and not parameter.is_meta:
                parameter.data = exact.to(parameter.device, parameter.dtype)
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

    def normalize(self, images: Tensor) -> Tensor:
        """What the first layer sees: resized (if ``resize``), normalised, in the device's layout."""
        return self._normalized(self._resized(images))

    def _resized(self, images: Tensor) -> Tensor:
        size = resized_size(self.resize, images.shape[-2], images.shape[-1])
        if size is None:
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _normalized(self, images: Tensor) -> Tensor:
        x = images * self.scale + self.shift
        if x.device.type in CHANNELS_LAST_DEVICES and x.dim() == 4:
            # see _match_memory_format: the features come out channels_last, and every
            # comparison is written for either layout.
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: Tensor) -> Features:
        """Run the truncated backbone; ``images``: ``(N, 3, H, W)`` in ``input_range``."""
        images = self._resized(images)
        features = self.layers(self._normalized(images))
        if self._reads:
            features = self._read(features, images.shape)
        if not self._input_tap:
            return features
        low, high = self.input_range
        unit = images if (low, high) == (0.0, 1.0) else (images - low) * (1.0 / (high - low))
        return {INPUT: unit, **features}

    def _read(self, outputs: Features, shape: torch.Size) -> Features:
        """The trunk's outputs as the taps ask: patch maps, class tokens or tokens (see :mod:`.tokens`)."""
        features = {}
        for tap in self.taps:
            if tap == INPUT:
                continue
            read = self._reads.get(tap)
            if read is None:
                features[tap] = outputs[tap]
                continue
            base, view, layout = read
            value = outputs[base]
            if value.dim() == 3:
                value = batch_first(value, shape[0])
            if layout is not None:
                value = layout.patch_map(value, shape[-2], shape[-1])
            elif view == "cls":
                value = value[:, 0]
            features[tap] = value
        return features

    @property
    def knows_receptive_fields(self) -> bool:
        """Whether :meth:`inside_masks` works: the classic backbones' loop, no ``resize``."""
        return isinstance(self.layers, classic.TappedSequential) and self.resize is None

    def inside_masks(self, mask: Tensor, taps: Sequence[str]) -> Features:
        """``{tap: mask}`` of the positions of ``taps`` whose whole receptive field is in ``mask``.

        Raises:
            ValueError: the backbone's receptive fields are not known here (traced backbones,
                ``resize``): use the default area-weighted mask mode.
        """
        if not self.knows_receptive_fields:
            raise ValueError(INSIDE_UNSUPPORTED.format(backbone=self.backbone))
        masks = self.layers.inside_masks(mask)  # type: ignore[operator]
        if self._input_tap:
            masks[INPUT] = mask
        return {tap: masks[tap] for tap in taps}

    def extra_repr(self) -> str:
        resize = f", resize={self.resize}" if self.resize is not None else ""
        pooling = f", pooling={self.pooling!r}" if self.pooling != "max" else ""
        stride = f", pool_stride={self.pool_stride}" if self.pool_stride is not None else ""
        return f"backbone={self.backbone!r}, taps={list(self.taps)}, input_range={self.input_range}{resize}{pooling}{stride}"


_PROBED: dict[tuple[str, tuple[str, ...], tuple[int, int] | None], graph.GraphInfo] = {}
"""Probe results of torchvision trunks, by (model name, taps, probed size): their graphs never change."""


def _statistics(backbone: str, spec: InputSpec, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Per-channel statistics and their broadcast shape: ``(1, C, 1, 1)``, ``(1, C, 1, 1, 1)`` for
    volumes; one value for all channels where they are all equal (``normalize=False``)."""
    spatial = (1,) * spec.spatial_dims
    if spec == IMAGES or len(mean) == len(std) == spec.channels:
        return mean, std, (1, len(mean), *spatial)
    if bool((mean == mean[0]).all() and (std == std[0]).all()):
        return mean[:1], std[:1], (1, 1, *spatial)
    raise ValueError(
        f"{backbone} takes {spec.channels}-channel input, but mean/std have {len(mean)} values: give one per channel."
    )


def _probe_size(resize: ResizePolicy) -> tuple[int, int] | None:
    """The one size a trunk is probed at when ``resize`` fixes it; ``None``: probe for the sizes it takes."""
    return resize if isinstance(resize, tuple) else None


def _graph_trunk(
    backbone: Backbone, taps: tuple[str, ...], weights: WeightsArg, resize: ResizePolicy
) -> tuple[nn.Module, graph.GraphInfo]:
    """A traced (or hooked), truncated, frozen-to-be trunk on CPU (or the user module's device), and its probe."""
    from . import graph

    if isinstance(backbone, nn.Module):
        return _module_trunk(backbone, taps, weights, resize)
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a torchvision model name or an nn.Module; got {type(backbone).__name__}.")
    name = check_backbone_name(backbone)
    model = build_model(name, meta=weights is not None)
    traced, qualnames = graph.trace(model, name)
    nodes = graph.resolve_taps(taps, traced, qualnames, name, classic.aliases(name))
    trunk = graph.truncated_module(model, traced, nodes, name)
    on_meta = next(iter(trunk.parameters())).is_meta
    key = (name, taps, _probe_size(resize))
    info = _PROBED.get(key) or _PROBED.setdefault(key, _probe(trunk, name, 224, resize))
    state = load_backbone_state(name, weights, model.state_dict())
    if on_meta:
        trunk = trunk.to_empty(device="cpu")
    if state is None:
        logger.info("%s initialised with random weights (weights=None): for tests only", name)
    else:
        _load_kept(trunk, state, name)
    graph.freeze_layers(trunk)
    return trunk, info


def _probe(trunk: nn.Module, name: str, hint: int, resize: ResizePolicy, spec: InputSpec = IMAGES) -> graph.GraphInfo:
    """The trunk's probe, at the size ``resize`` fixes if it does; if the trunk refuses that size,
    the error says which sizes it takes. Volumes (``spec``) are probed as cubes of up to 256."""
    from . import graph
    from .tokens import patch_size

    size, patch = _probe_size(resize), patch_size(trunk)
    if spec.spatial_dims == 3:
        return graph.probe(trunk, name, limit=256, hint=min(hint, 64), patch=patch, spec=spec)
    if size is None:
        return graph.probe(trunk, name, hint=hint, patch=patch)
    try:
        return graph.probe(trunk, name, hint=hint, size=size, patch=patch)
    except ValueError as error:
        try:
            free = graph.probe(trunk, name, hint=hint, patch=patch)
        except ValueError:
            raise error from None
        _input_size_policy(name, resize, free.min_size, free.fixed_size)  # names the sizes it takes
        raise


def _module_trunk(
    module: nn.Module, taps: tuple[str, ...], weights: WeightsArg, resize: ResizePolicy
) -> tuple[nn.Module, graph.GraphInfo]:
    """The user's module, traced (or hooked) through a copy: the module itself is never changed or kept."""
    from . import graph, hooks

    name = type(module).__name__
    model = graph.detached_copy(module).eval()
    try:
        traced, qualnames = graph.trace(model, name)
    except graph.TraceError as error:
        hooks.check_module_taps(model, taps, str(error))
        try:  # the tapped modules as leaves: fx keeps its pruning and in-place safety
            traced, qualnames = graph.trace(model, name, leaves=[t for t in taps if t != graph.LOGITS])
        except graph.TraceError:
            return _hooked_trunk(module, model, taps, weights, resize)
    nodes = graph.resolve_taps(list(taps), traced, qualnames, name)
    trunk = graph.truncated_module(model, traced, nodes, name)
    graph.own_tensors(trunk)
    _load_module_weights(module, trunk, weights, name)
    info = _probe(trunk, name, native_size(module) or 224, resize, input_spec(module))
    graph.freeze_layers(trunk)
    return trunk, info


def _hooked_trunk(
    module: nn.Module, model: nn.Module, taps: tuple[str, ...], weights: WeightsArg, resize: ResizePolicy
) -> tuple[nn.Module, graph.GraphInfo]:
    """``model`` (a copy of ``module`` sharing its tensors) run with hooks, stopped after the deepest tap."""
    from . import graph, hooks
    from .tokens import patch_size

    name = type(module).__name__
    trunk = hooks.HookedTrunk(model, taps, name)
    spec = input_spec(module)
    info = _probe(trunk, name, native_size(module) or 224, resize, spec)
    entered, overwritten = _inspect(trunk, spec.shape(*info.size))
    trunk.clone = frozenset(overwritten)
    replaced = hooks.prune(model, entered)
    try:
        _inspect(trunk, spec.shape(*info.size), to_the_end=False)
    except Exception:  # something dropped is used after all (e.g. a parameter read directly): keep all
        hooks.restore(replaced)
        replaced = []
    logger.info(
        "%s runs with forward hooks on %s, stopped after the deepest; %d unused submodules dropped",
        name, list(trunk.module_names), len(replaced),
    )  # fmt: skip
    graph.own_tensors(trunk)
    _load_module_weights(module, trunk.model, weights, name)
    graph.freeze_layers(trunk)
    trunk.size_note = _size_note(info, patch_size(trunk))
    trunk.ready = True
    return trunk, info


def _size_note(info: graph.GraphInfo, patch: int | None) -> str:
    """What input sizes a probed trunk takes, and the ``resize=`` that fits them."""
    if info.fixed_size is not None:
        return f"It takes {info.fixed_size}x{info.fixed_size} images only: pass resize={info.fixed_size}."
    if info.multiple is not None:
        return (
            f"It takes sides in whole patches of {info.multiple} pixels only (at least {info.min_size}): pass "
            f"resize=MultipleOf({info.multiple})."
        )
    multiple = f", or resize=MultipleOf({patch}) for whole patches" if patch else ""
    return f"It takes images of at least {info.min_size}x{info.min_size} pixels: pass resize=<size>{multiple}."


def _inspect(trunk: nn.Module, shape: tuple[int, ...], to_the_end: bool = True) -> tuple[set[str], set[str]]:
    """:func:`hooks.inspect_run` on a meta copy of ``trunk`` (input ``shape``), or for real where meta cannot run it."""
    from . import graph, hooks

    try:
        x = torch.empty(shape, device="meta")
        return hooks.inspect_run(graph.meta_copy(trunk), x, to_the_end)  # type: ignore[arg-type]
    except hooks.TapError:
        raise
    except Exception:
        reference = next(iter(trunk.parameters()), torch.empty(0))
        x = torch.zeros(shape, device=reference.device, dtype=reference.dtype)
        return hooks.inspect_run(trunk, x, to_the_end)  # type: ignore[arg-type]


def _load_module_weights(module: nn.Module, trunk: nn.Module, weights: WeightsArg, name: str) -> None:
    """A path given for a module: its state dict, checked against the whole module, into what ``trunk`` keeps."""
    if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        state = load_backbone_state(name, weights, module.state_dict())
        assert state is not None
        _load_kept(trunk, state, name)


def _load_kept(trunk: nn.Module, state: dict[str, Tensor], name: str) -> None:
    """Load the part of a (checked) full state dict that the truncated trunk keeps, strictly."""
    wanted = list(trunk.state_dict())
    missing = [k for k in wanted if k not in state]
    if missing:
        raise InvalidWeightsError(
            f"The weights file of {name} lacks {len(missing)} tensors these taps need (e.g. {missing[0]!r}): "
            f"it holds only part of the model (e.g. the 'features' part). Use a full state dict."
        )
    trunk.load_state_dict({k: state[k] for k in wanted}, strict=True)


def _check_range_arg(input_range: Sequence[float]) -> tuple[float, float]:
    try:
        if isinstance(input_range, (str, bytes)):
            raise TypeError
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be a pair (low, high) such as (0, 1) or (-1, 1); got {input_range!r}."
        ) from None
    if not high > low:
        raise ValueError(f"input_range must have low < high, e.g. (0, 1); got {input_range!r}.")
    return low, high


def resized_size(resize: ResizePolicy, height: int, width: int) -> tuple[int, int] | None:
    """The size images of ``height x width`` are resized to, or ``None`` to leave them as they are."""
    if resize is None:
        return None
    if isinstance(resize, MultipleOf):
        m = resize.size
        size = (max(m, round(height / m) * m), max(m, round(width / m) * m))
        return None if size == (height, width) else size
    if isinstance(resize, ShortSide):
        short = min(height, width)
        if short <= resize.size:
            return None
        # torchvision's Resize(size) rounding: the short side exactly, the long one truncated
        if height <= width:
            return resize.size, int(resize.size * width / height)
        return int(resize.size * height / width), resize.size
    return None if (height, width) == resize else resize


def check_resize(resize: Resize) -> ResizePolicy:
    if resize is None:
        return None
    if isinstance(resize, (ShortSide, MultipleOf)):
        if not (isinstance(resize.size, int) and not isinstance(resize.size, bool) and resize.size > 0):
            raise ValueError(f"{type(resize).__name__} needs a positive int size such as 14; got {resize.size!r}.")
        return resize
    pair = (resize, resize) if isinstance(resize, int) else resize
    try:
        height, width = pair  # type: ignore[misc]
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"resize must be None, a positive int such as 224, a (height, width) pair, ShortSide(256) or "
            f"MultipleOf(14); got {resize!r}."
        )
    return int(height), int(width)


def _input_size_policy(
    name: str, resize: ResizePolicy, min_size: int, fixed_size: int | None
) -> tuple[int | None, int]:
    """``(fixed_size, min_size)`` of the images passed in, given the trunk's and ``resize``."""
    if isinstance(resize, MultipleOf):
        if fixed_size is not None:
            raise ValueError(f"{name} takes {fixed_size}x{fixed_size} images only; set resize={fixed_size}.")
        return None, 1 if min_size <= resize.size else min_size
    if resize is None or isinstance(resize, ShortSide):  # a short side only shrinks large images
        if fixed_size is not None and resize is not None:
            raise ValueError(f"{name} takes {fixed_size}x{fixed_size} images only; set resize={fixed_size}.")
        return fixed_size, fixed_size or min_size
    if fixed_size is not None and resize != (fixed_size, fixed_size):
        raise ValueError(f"{name} takes {fixed_size}x{fixed_size} images only; set resize={fixed_size}, not {resize}.")
    if min(resize) < min_size:
        raise ValueError(f"resize={resize} is too small for these taps of {name}: it needs at least {min_size} pixels.")
    return None, 1
