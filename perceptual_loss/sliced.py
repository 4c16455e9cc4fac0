"""Slices: any image loss on 5-D clips ``(N, C, T, H, W)`` and volumes ``(N, C, D, H, W)``.

A video tokenizer scores a few frames per clip; a medical autoencoder scores slices of its volumes
along all three axes (MONAI's "2.5-D" perceptual loss). Both are the same operation: along each
chosen dim, the slices become a batch of 2-D images, the same slices are taken from pred and
target, the loss is averaged over the slices taken, and the per-dim values are summed (MONAI's
rule, so a MONAI user's weight carries over). :class:`Slicing` says which slices; :class:`SlicedLoss`
wraps a loss with it; :class:`~perceptual_loss.CombinedLoss` takes one as ``slices=``.

Only the slices drawn are gathered (one copy of those, in the input's dtype; nothing of the rest),
so slices not drawn get exactly zero gradient. Draws come from a ``torch.Generator`` when given:
the same seed gives the same slices. A slice's flat index is ``n * count + s`` (sample ``n``,
position ``s`` along the dim), the order of ``einops.rearrange(x, "b c t h w -> (b t) c h w")``.

Memory: the slices of one dim are one batch for the wrapped loss; give that loss ``chunk_size=``
to run them a few at a time (see :mod:`perceptual_loss.chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

VOLUME_DIMS = (2, 3, 4)
"""The dims of a 5-D ``(N, C, T|D, H, W)`` tensor that can be sliced along."""


@dataclass(frozen=True)
class Slicing:
    """Which slices of a 5-D tensor a loss sees.

    Args:
        dims: the dims to slice along, each of 2, 3, 4 (or -3, -2, -1) once: ``(2,)`` for the
            frames of a clip, ``(2, 3, 4)`` for a volume's three axes.
        ratio: draw ``int(ratio * N * count)`` slices over the whole batch, in ``(0, 1]``
            (MONAI's ``fake_3d_ratio``).
        per_sample: draw this many slices from each sample (the video tokenizers' rule).
            Neither ``ratio`` nor ``per_sample``: every slice. Draws are without replacement.

    Example:
        >>> slicing = Slicing(dims=(2,), per_sample=2)
        >>> index = slicing.draw(batch=3, count=8, generator=torch.Generator().manual_seed(0))
        >>> index.shape, (index // 8).tolist()
        (torch.Size([6]), [0, 0, 1, 1, 2, 2])
    """

    dims: tuple[int, ...] = VOLUME_DIMS
    ratio: float | None = None
    per_sample: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.dims, int) or not isinstance(self.dims, Sequence) or not self.dims:
            raise ValueError(f"dims must be a non-empty tuple of dims among {VOLUME_DIMS}; got {self.dims!r}.")
        dims = tuple(d + 5 if isinstance(d, int) and -3 <= d < 0 else d for d in self.dims)
        bad = [d for d in dims if isinstance(d, bool) or d not in VOLUME_DIMS]
        if bad:
            raise ValueError(
                f"dims {list(self.dims)}: {bad[0]!r} is out of range; a 5-D (N, C, T|D, H, W) tensor is sliced along "
                f"its dims {VOLUME_DIMS} (or -3, -2, -1)."
            )
        if len(set(dims)) != len(dims):
            raise ValueError(f"dims {list(self.dims)} repeats a dim; give each dim once.")
        object.__setattr__(self, "dims", dims)
        if self.ratio is not None and self.per_sample is not None:
            raise ValueError(
                "ratio= and per_sample= are two rules for one draw; give one: ratio=r draws int(r * N * count) "
                "slices over the batch, per_sample=k draws k slices from each sample."
            )
        if self.ratio is not None and (
            isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 < self.ratio <= 1
        ):
            raise ValueError(f"ratio must be in (0, 1]; got {self.ratio!r}. Use ratio=None for every slice.")
        if self.per_sample is not None and (
            isinstance(self.per_sample, bool) or not isinstance(self.per_sample, int) or self.per_sample < 1
        ):
            raise ValueError(f"per_sample must be a positive int (slices per sample) or None; got {self.per_sample!r}.")

    def draw(
        self, batch: int, count: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Tensor:
        """Sorted flat indices ``n * count + s`` of the slices drawn from ``batch`` samples of ``count`` slices.

        Raises:
            ValueError: ``per_sample`` is larger than ``count``, or ``ratio`` draws no slice.
        """
        total = batch * count
        # With a generator: on its device (its stream decides the slices); without one, where the
        # indices are used (no copy per call).
        draw_on = generator.device if generator is not None else (device or torch.device("cpu"))
        if total == 0:  # an empty batch: nothing to draw
            return torch.zeros(0, dtype=torch.long, device=draw_on if device is None else device)
        if self.per_sample is not None:
            if self.per_sample > count:
                raise ValueError(
                    f"per_sample={self.per_sample} is more than the {count} slices along a dim of size {count}; "
                    f"use per_sample <= {count}, or per_sample=None for every slice."
                )
            # k distinct positions per sample, uniformly: the first k of a random order of each row.
            order = torch.rand(batch, count, generator=generator, device=draw_on).argsort(dim=1)
            picks = order[:, : self.per_sample].sort(dim=1).values
            index = (picks + count * torch.arange(batch, device=draw_on).unsqueeze(1)).flatten()
        elif self.ratio is not None:
            k = int(self.ratio * total)
            if k == 0:
                raise ValueError(
                    f"ratio={self.ratio} draws int({self.ratio} * {total}) = 0 of the {total} slices; "
                    f"use ratio >= {1 / total:.3g}."
                )
            index = torch.randperm(total, generator=generator, device=draw_on)[:k].sort().values
        else:
            index = torch.arange(total, device=draw_on)
        return index if device is None else index.to(device)


def check_generator(generator: object, option: str) -> None:
    """``generator`` is ``None`` or a ``torch.Generator``; otherwise a ``TypeError`` naming ``option``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{option} must be a torch.Generator or None; got {type(generator).__name__}.")


def take_slices(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """The slices ``index`` (flat ``n * count + s``, see :meth:`Slicing.draw`) of ``x`` along ``dim``, as ``(k, C, ., .)``.

    Only those slices are copied; their gradient flows back to ``x`` (zero elsewhere).

    Example:
        >>> clip = torch.rand(2, 3, 5, 8, 8)
        >>> take_slices(clip, 2, torch.tensor([1, 7])).shape
        torch.Size([2, 3, 8, 8])
    """
    moved = x.movedim(dim, 1)  # (N, count, C, a, b): a view
    count = moved.shape[1]
    if index.numel() == moved.shape[0] * count:  # every slice
        return every_slice(x, dim)
    return moved[index // count, index % count]


def every_slice(x: Tensor, dim: int) -> Tensor:
    """Every slice of ``x`` along ``dim`` as ``(N * count, C, ., .)``, in ``take_slices``' order: one
    reshape (a copy only where the layout needs one)."""
    moved = x.movedim(dim, 1)
    return moved.reshape(-1, *moved.shape[2:])


def check_volumes(pred: Tensor, target: Tensor, owner: str) -> None:
    """``pred`` and ``target`` are 5-D floating tensors of one shape and device."""
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, T|D, H, W); got {type(x).__name__}.")
        if x.dim() != 5:
            fix = " A batch of images is 4-D: call the wrapped loss on it directly." if x.dim() == 4 else ""
            raise ValueError(
                f"{owner} takes 5-D clips (N, C, T, H, W) or volumes (N, C, D, H, W); {name} has shape "
                f"{tuple(x.shape)}.{fix}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name} has dtype {x.dtype}; expected floating-point values (e.g. x.float() / 255).")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}; move both to one device.")


def slice_means(value: Tensor, index: Tensor, batch: int, count: int) -> Tensor:
    """One dim's value from the wrapped loss's output on the slices ``index``: a scalar as it
    is (the loss reduced over the slices), or ``(k,)`` per-slice values averaged per sample to
    ``(batch,)`` (0 for a sample with no slice drawn)."""
    if not isinstance(value, Tensor):
        fix = " For CombinedLoss, pass slices= to it instead." if hasattr(value, "total") else ""
        raise TypeError(
            f"SlicedLoss needs the wrapped loss to return a tensor; it returned {type(value).__name__}.{fix}"
        )
    if value.dim() == 0:
        return value
    if value.shape != index.shape:
        raise ValueError(
            f"SlicedLoss needs the wrapped loss to give a scalar or one value per slice; it gave shape "
            f"{tuple(value.shape)} for {index.numel()} slices (a spatial map? use reduction='mean' or 'none')."
        )
    samples = index // count
    sums = value.new_zeros(batch).index_add(0, samples, value)
    counts = torch.bincount(samples, minlength=batch).clamp(min=1).to(value.dtype)
    return sums / counts


class SlicedLoss(nn.Module):
    """Any image loss on 5-D clips and volumes: averaged over the slices drawn along each dim, summed over dims.

    Args:
        loss: a loss of this library, or any module or function taking ``(N, C, H, W)`` pairs
            (and ``mask=`` if masks are given). Its ``reduction`` applies over each dim's slices:
            ``"mean"`` (MONAI's rule) gives a scalar; ``"none"`` gives ``(N,)`` per-sample values
            (each sample's mean over its slices drawn, summed over dims).
        dims, ratio, per_sample: which slices, see :class:`Slicing`. ``dims=(2,)`` for the frames
            of a clip; ``(2, 3, 4)`` (default) for a volume's three axes.
        generator: a ``torch.Generator`` for the draws (same seed, same slices); default the
            global RNG.

    Shape:
        - pred, target: ``(N, C, T, H, W)`` or ``(N, C, D, H, W)``, in the wrapped loss's range.
        - mask (optional): ``(N or 1, 1, T|D, H, W)``, sliced like the images.
        - Output: scalar, or ``(N,)`` if the wrapped loss gives one value per slice.

    Example:
        >>> from perceptual_loss import LPIPSLoss
        >>> lpips = LPIPSLoss(net="squeeze", weights=None, grayscale="repeat")
        >>> loss = SlicedLoss(lpips, dims=(2, 3, 4), ratio=0.5, generator=torch.Generator().manual_seed(0))
        >>> volume = torch.rand(1, 1, 24, 32, 40, requires_grad=True)
        >>> value = loss(volume, torch.rand(1, 1, 24, 32, 40))
        >>> value.backward()
        >>> value.shape, volume.grad.shape
        (torch.Size([]), torch.Size([1, 1, 24, 32, 40]))
    """

    def __init__(
        self,
        loss: nn.Module | Callable[..., Tensor],
        dims: Sequence[int] = VOLUME_DIMS,
        ratio: float | None = None,
        per_sample: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be a loss module or function of (pred, target); got {type(loss).__name__}.")
        check_generator(generator, "generator")
        self.loss = loss
        self.slicing = Slicing(tuple(dims), ratio, per_sample)
        self.generator = generator

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        check_volumes(pred, target, type(self).__name__)
        if mask is not None and (mask.dim() != 5 or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]):
            raise ValueError(
                f"mask must have shape (N or 1, 1, {', '.join(map(str, pred.shape[2:]))}) to match pred "
                f"{tuple(pred.shape)}; got {tuple(mask.shape)}."
            )
        total: Tensor | None = None
        n = pred.shape[0]
        for dim in self.slicing.dims:
            count = pred.shape[dim]
            index = self.slicing.draw(n, count, self.generator, pred.device)
            p, t = take_slices(pred, dim, index), take_slices(target, dim, index)
            if mask is None:
                value = self.loss(p, t)
            else:
                m = take_slices(mask.expand(n, *mask.shape[1:]), dim, index)
                value = self.loss(p, t, mask=m)
            value = slice_means(value, index, n, count)
            total = value if total is None else total + value
        assert total is not None
        return total

    def extra_repr(self) -> str:
        rule = (
            f"ratio={self.slicing.ratio}"
            if self.slicing.ratio is not None
            else f"per_sample={self.slicing.per_sample}"
            if self.slicing.per_sample is not None
            else "every slice"
        )
        return f"dims={self.slicing.dims}, {rule}"
