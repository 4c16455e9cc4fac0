"""Tiles: one large image scored piece by piece, every feature equal to the untiled one.

With ``tile=T``, a loss on a classic trunk (the VGGs, AlexNet, SqueezeNet) cuts each image into
cores of ``T x T`` pixels (the last ones smaller) and runs the trunk on each core grown by a
*halo* on every side that is not the image's edge. The halo is the reach of the deepest tap's
receptive field (how far, above and below, any of its positions reads input pixels, summed
over the layers), rounded up to the trunk's total stride ``S``; cores start at multiples of
``S``. So every feature position of a core is computed from exactly the pixels it reads in the
whole image, and its value equals the untiled one; the halo's own positions are dropped.

The loss of an image is a weighted mean over positions for every tap; each tile adds its core's
share, ``mean over the core x (core weight / image weight)`` per tap, where the weights are the
mask's (an all-ones mask without one) brought to each tap as for the whole image. Each tile's
input gradient is taken as it runs (see :func:`perceptual_loss.chunks.piecewise_values`), so
memory holds one tile's activations. Terms whose statistics span the whole image (Gram
matrices, DISTS' means and variances, a Frobenius norm) cannot be tiled: an error says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones import FeatureExtractor
from .backbones.classic import TappedSequential, Window, layer_window
from .chunks import Index, PieceFunction, piecewise_values
from .distances import MASK_EPS

if TYPE_CHECKING:
    from .losses._base import Comparison

TILE_UNSUPPORTED = (
    "tile= needs the receptive fields of the classic trunks (the VGGs, alexnet, squeezenet1_1) with every tap in "
    "their features, run without resize; {backbone} is not one. Use chunk_size= to bound memory instead."
)


@dataclass(frozen=True)
class TileGeometry:
    """The strides of a classic trunk's taps and the halo its deepest tap needs."""

    strides: dict[str, int]
    """Each tap's total stride: a position ``i`` of it stands for input pixel ``i * stride``."""
    stride: int
    """The total stride of the deepest tap; tile cores start at multiples of it."""
    halo: int
    """Pixels added on each inner side of a core: the receptive reach, rounded up to ``stride``."""

    @classmethod
    def of(cls, trunk: TappedSequential) -> TileGeometry:
        jump, up, down, strides = 1, 0, 0, {}
        for window, taps in _tapped_layers(trunk):
            if window is not None:
                kernel, stride, padding, dilation, _ = window
                up += padding * jump
                down += ((kernel - 1) * dilation - padding) * jump
                jump *= stride
            strides.update(dict.fromkeys(taps, jump))
        # A position i of the deepest tap reads pixels [i*S - up, i*S + S - 1 + down].
        halo = math.ceil((max(up, down) + jump) / jump) * jump
        return cls(strides, jump, halo)


def _tapped_layers(trunk: TappedSequential) -> Iterator[tuple[Window | None, tuple[str, ...]]]:
    """``(each layer's window or None, the taps after it)`` up to the deepest tap."""
    deepest = max(trunk.tap_at)
    for index, layer in enumerate(trunk):
        if index > deepest:
            return
        yield layer_window(layer), trunk.tap_at.get(index, ())


def tile_pieces(
    height: int, width: int, tile: int, geometry: TileGeometry
) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """``[((core rows, core cols), (crop rows, crop cols))]`` covering the image once with cores."""
    step = tile - tile % geometry.stride
    pieces = []
    for y0 in range(0, height, step):
        for x0 in range(0, width, step):
            y1, x1 = min(height, y0 + step), min(width, x0 + step)
            core = (slice(y0, y1), slice(x0, x1))
            crop = (
                slice(max(0, y0 - geometry.halo), min(height, y1 + geometry.halo)),
                slice(max(0, x0 - geometry.halo), min(width, x1 + geometry.halo)),
            )
            pieces.append((core, crop))
    return pieces


def core_masks(
    full: dict[str, Tensor], core: tuple[slice, slice], crop: tuple[slice, slice], crop_sizes: dict[str, tuple[int, int]],
    geometry: TileGeometry, image: tuple[int, int],
) -> dict[str, Tensor]:  # fmt: skip
    """Each tap's mask on the crop's grid: the image's mask (``full``) on the core, 0 on the halo."""
    masks = {}
    for tap, mask in full.items():
        j = geometry.strides[tap]
        rows, cols = crop_sizes[tap]
        top, left = crop[0].start // j, crop[1].start // j
        a = (core[0].start - crop[0].start) // j
        b = rows if core[0].stop == image[0] else (core[0].stop - crop[0].start) // j
        c = (core[1].start - crop[1].start) // j
        d = cols if core[1].stop == image[1] else (core[1].stop - crop[1].start) // j
        piece = mask.new_zeros(mask.shape[0], 1, rows, cols)
        piece[:, :, a:b, c:d] = mask[:, :, top + a : top + b, left + c : left + d]
        masks[tap] = piece
    return masks


def feature_sizes(trunk: TappedSequential, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Each tap's ``(rows, cols)`` for a ``height x width`` input, from the layers' windows."""
    sizes, rows, cols = {}, height, width
    for window, taps in _tapped_layers(trunk):
        if window is not None:
            kernel, stride, padding, dilation, ceil = window
            rows, cols = (_out(v, kernel, stride, padding, dilation, ceil) for v in (rows, cols))
        sizes.update(dict.fromkeys(taps, (rows, cols)))
    return sizes


def _out(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # PyTorch's rule: the last window starts inside
        out -= 1
    return out


def image_masks(mask: Tensor | None, sizes: dict[str, tuple[int, int]], like: Tensor) -> dict[str, Tensor]:
    """The mask (ones without one) at each tap's resolution over the whole image, as ``masks_at``."""
    out = {}
    for tap, size in sizes.items():
        if mask is None:
            out[tap] = like.new_ones(1, 1, 1, 1).expand(1, 1, *size)
        else:
            out[tap] = mask if tuple(mask.shape[-2:]) == size else F.adaptive_avg_pool2d(mask, size)
    return out


def weights_sum(mask: Tensor) -> Tensor:
    """``(N or 1,)`` sum of a ``(N or 1, 1, H, W)`` mask, in float32 at least."""
    return mask.to(torch.promote_types(mask.dtype, torch.float32)).sum(dim=(1, 2, 3))


def tiled_values(
    extractor: FeatureExtractor, comparison: Comparison, pred: Tensor, target: Tensor, full: dict[str, Tensor],
    tile: int, geometry: TileGeometry,
) -> Tensor:  # fmt: skip
    """``(N,)`` values of ``comparison`` on ``extractor``'s features, tile by tile (see the module doc).

    ``full``: each tap's mask over the whole image (:func:`image_masks`, or the ``"inside"``
    masks); the target is cut like ``pred``.
    """
    height, width = pred.shape[-2], pred.shape[-1]
    totals = {tap: weights_sum(m).clamp_min(MASK_EPS) for tap, m in full.items()}
    pieces: list[tuple[Index, PieceFunction]] = []
    for core, crop in tile_pieces(height, width, tile, geometry):

        def compute(
            p: Tensor, t: Tensor | None, core: tuple[slice, slice] = core, crop: tuple[slice, slice] = crop
        ) -> Tensor:
            assert t is not None
            prepared = comparison.prepare_target(extractor(t))
            features = extractor(p)
            sizes = {tap: (features[tap].shape[-2], features[tap].shape[-1]) for tap in comparison.taps}
            masks = core_masks(full, core, crop, sizes, geometry, (height, width))
            shares = comparison.tap_values(features, prepared, masks)
            return torch.stack([shares[tap] * (weights_sum(masks[tap]) / totals[tap]) for tap in shares]).sum(0)

        pieces.append(((slice(None), slice(None), crop[0], crop[1]), compute))
    return piecewise_values(pieces, pred, target)
