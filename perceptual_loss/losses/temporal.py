"""Temporal LPIPS (TecoGAN's tLP, Chu et al., 2020): flicker as a loss and a metric."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from typing_extensions import Unpack

from ..backbones import Features
from ..chunks import chunked_values
from ..sliced import VOLUME_DIMS, check_volumes, every_slice
from ._base import FeatureLoss, reduce
from .lpips import LPIPSComparison
from .options import LossOptions, split_options


class TemporalLPIPS(FeatureLoss):
    """``mean over n, t of |LPIPS(p_t, p_t-1) - LPIPS(g_t, g_t-1)|``: how far a clip's frame-to-frame change is from the reference's.

    TecoGAN's tLP (reported there times 100): 0 when the prediction changes from frame to frame
    exactly as the reference does, large when it flickers (or freezes). Each frame goes through
    the trunk once (pred with autograd, the reference without); consecutive frames are compared
    by LPIPS, equal to :class:`~perceptual_loss.LPIPSLoss` on the same pairs.

    Args:
        net, version: the LPIPS network and version, as for :class:`~perceptual_loss.LPIPSLoss`.
        dim: the time dim of the 5-D clips: 2 for ``(N, C, T, H, W)`` (default).
        **options: the options every loss shares (:mod:`perceptual_loss.losses.options`);
            ``chunk_size`` counts clips; not ``tile`` or ``channels``.

    Shape:
        - pred, target: ``(N, C, T, H, W)`` (``T >= 2``; time at ``dim``) in ``input_range``.
        - Output: ``()``; ``(N,)`` with ``reduction="none"`` (each clip's mean over its steps).

    Example:
        >>> loss = TemporalLPIPS(net="squeeze", weights=None)
        >>> clip = torch.rand(2, 3, 4, 32, 32)
        >>> float(loss(clip, clip)), loss(clip, torch.rand(2, 3, 4, 32, 32)).shape
        (0.0, torch.Size([]))
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        dim: int = 2,
        version: Literal["0.1", "0.0"] = "0.1",
        **options: Unpack[LossOptions],
    ) -> None:
        view, read = split_options(options, "TemporalLPIPS", refused=("tile", "channels"))
        super().__init__(LPIPSComparison(net, version, False, **view), **read)
        dim = dim + 5 if -3 <= dim < 0 else dim
        if dim not in VOLUME_DIMS:
            raise ValueError(f"dim must be the time dim of a 5-D clip, one of {VOLUME_DIMS}; got {dim!r}.")
        self.dim = dim

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("TemporalLPIPS takes no mask: it compares whole frames over time.")
        check_volumes(pred, target, "TemporalLPIPS")
        steps = pred.shape[self.dim]
        if steps < 2:
            raise ValueError(
                f"TemporalLPIPS needs at least 2 frames along dim {self.dim}; got shape {tuple(pred.shape)}."
            )
        if self.chunk_size is None or pred.shape[0] <= self.chunk_size:
            values = self._clip_values(pred, target)
        else:
            values = chunked_values(lambda _, p, t: self._clip_values(p, t), pred, target, self.chunk_size)  # type: ignore[arg-type]
        return reduce(values, self.reduction)

    def _clip_values(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(N,)``: each clip's mean over steps of the difference of its LPIPS steps."""
        n, steps = pred.shape[0], pred.shape[self.dim]
        frames = self.check(every_slice(pred, self.dim), every_slice(target, self.dim))
        size = (frames[0].shape[-2], frames[0].shape[-1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            reference = self._steps(self.extractor(frames[1]), n, steps, size)
        changes = self._steps(self.extractor(frames[0]), n, steps, size)
        return (changes - reference).abs().view(n, steps - 1).mean(dim=1)

    def _steps(self, features: Features, n: int, steps: int, size: tuple[int, int]) -> Tensor:
        """``(N * (T - 1),)`` LPIPS between each frame and the one before it, from every frame's features."""
        later = {k: v.unflatten(0, (n, steps))[:, 1:].flatten(0, 1) for k, v in features.items()}
        earlier = {k: v.unflatten(0, (n, steps))[:, :-1].flatten(0, 1) for k, v in features.items()}
        return self.comparison(later, self.comparison.prepare_target(earlier), size)

    def extra_repr(self) -> str:
        return f"{self.comparison.extra_repr()}, dim={self.dim}"
