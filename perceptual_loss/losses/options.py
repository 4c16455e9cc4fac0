"""The options every loss shares, declared once.

Each loss has its own arguments (``layers``, ``net``, ``distance``, ...) and then takes the
options below as keywords, checked here: a new shared option is one line in these tables, and
its documentation is written once, here.

**What the trunk sees** (:class:`ViewOptions`; equal views share one pass in a criterion):

- ``mean``, ``std``: per-channel statistics applied to ``[0, 1]`` images; default the weights'
  own (ImageNet's for torchvision's; a module's own where it carries them: timm's
  ``pretrained_cfg``, open_clip's ``image_mean``, transformers' CLIP and SigLIP).
- ``normalize``: ``True`` (default: as above) | ``False`` (no statistics at all: the network sees
  ``[0, 1]`` images, BasicSR's ``use_input_norm=False``) | ``"imagenet"`` | ``"clip"`` |
  ``"siglip"`` (:data:`~perceptual_loss.backbones.STATISTICS`); not together with ``mean``/``std``.
- ``resize``: ``None`` (default: images go in as they are) | ``224`` | ``(H, W)``: both images
  resized (bilinear, antialiased) before the trunk, as MaskBit and TiTok do |
  :class:`~perceptual_loss.backbones.ShortSide` ``(256)`` | :class:`~perceptual_loss.backbones.MultipleOf`
  ``(14)`` (whole patches, for dynamic-size ViTs).
- ``pooling``: what the classic trunks' max-pools become: ``"max"`` (default) | ``"avg"`` (piq's
  ``replace_pooling=True``; Gatys et al.'s choice for style) | ``"l2"`` (DISTS' L2-pool; VGGs) |
  ``"none"`` (BasicSR's ``remove_pooling=True``).
- ``pool_stride``: the pools' stride (BasicSR's ``pooling_stride``); ``None``: the network's.

**How a loss reads its inputs and reduces** (:class:`ReadOptions`):

- ``reduction``: ``"mean"`` (default) | ``"sum"`` over the batch (or the map), or ``"none"``.
- ``weights``: the trunk's weights: ``"imagenet"`` (default: torchvision's, through the torch hub
  cache; a module's own) | a weights enum name such as ``"IMAGENET1K_V2"`` | a path to a local
  file | ``None`` (random, for tests only).
- ``input_range``: the images' value range, ``(0, 1)`` (default) or ``(-1, 1)``; normalised inside.
- ``grayscale``: ``"repeat"`` accepts 1-channel images by repeating them to RGB.
- ``channels``: ``None`` (default: RGB, or one channel with ``grayscale``) | ``"each"``: each
  channel is scored as its own grayscale image and the values are averaged over channels
  (multi-contrast MRI, MONAI's MedicalNet convention, any channel count).
- ``check_inputs``: check the target's value range (one host sync per call; default ``True``);
  set ``False`` in a tuned training loop. Shape, dtype and device checks always run.
- ``mask_mode``: how a ``mask=`` reaches each tap: ``"area"`` (default: area-averaged) |
  ``"inside"`` (only positions whose whole receptive field is in the mask; classic trunks
  without resize).
- ``chunk_size``: ``None`` (default: the whole batch at once) | samples per chunk: the loss runs
  chunk by chunk and takes each chunk's input gradient as it goes, so memory holds one chunk's
  activations, with the same values (see :mod:`perceptual_loss.chunks`: no double backward).
- ``tile``: ``None`` (default) | pixels per tile side: an image larger than that is scored tile
  by tile, each grown by the receptive field's halo, with every feature equal to the untiled
  one (see :mod:`perceptual_loss.tiles`; classic trunks, terms that are means over positions:
  perceptual and LPIPS).
- ``max_memory``: ``None`` (default) | a budget such as ``"2GiB"``, ``"512MB"`` or bytes: the
  loss picks ``chunk_size`` (and, where it can tile and one sample does not fit, ``tile``) for
  each input shape from the trunk's activation sizes (see :mod:`perceptual_loss.budget`); not
  together with ``chunk_size`` or ``tile``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict

from ..backbones import Normalize, Pooling, Resize
from ..validation import Channels, Grayscale
from ..weights import WeightsArg


class StatisticsOptions(TypedDict, total=False):
    """The trunk's input statistics (see the module doc)."""

    mean: Sequence[float] | None
    std: Sequence[float] | None
    normalize: Normalize


class ViewOptions(StatisticsOptions, total=False):
    """What the trunk sees (see the module doc)."""

    resize: Resize
    pooling: Pooling
    pool_stride: int | None


class ReadOptions(TypedDict, total=False):
    """How a loss reads its inputs and reduces (see the module doc)."""

    reduction: str
    weights: WeightsArg
    input_range: tuple[float, float]
    grayscale: Grayscale
    channels: Channels
    check_inputs: bool
    mask_mode: str
    chunk_size: int | None
    tile: int | None
    max_memory: int | str | None


class LossOptions(ViewOptions, ReadOptions, total=False):
    """Every option the losses share: :class:`ViewOptions` and :class:`ReadOptions`."""


STATISTICS_OPTIONS: frozenset[str] = StatisticsOptions.__required_keys__ | StatisticsOptions.__optional_keys__
VIEW_OPTIONS: frozenset[str] = ViewOptions.__required_keys__ | ViewOptions.__optional_keys__
READ_OPTIONS: frozenset[str] = ReadOptions.__required_keys__ | ReadOptions.__optional_keys__


def check_options(options: Mapping[str, Any], owner: str, valid: Collection[str]) -> None:
    """Raise ``TypeError`` naming the first of ``options`` that ``owner`` does not take, and the valid ones."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"{owner} got an unexpected keyword argument {unknown[0]!r}; its shared options are "
            f"{', '.join(sorted(valid))} (see perceptual_loss.losses.options)."
        )


def split_options(
    options: Mapping[str, Any], owner: str, refused: Collection[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(view options, read options)`` of a loss's keywords; unknown or ``refused`` ones are a ``TypeError``."""
    check_options(options, owner, (VIEW_OPTIONS | READ_OPTIONS) - set(refused))
    view = {k: v for k, v in options.items() if k in VIEW_OPTIONS}
    read = {k: v for k, v in options.items() if k in READ_OPTIONS}
    return view, read
