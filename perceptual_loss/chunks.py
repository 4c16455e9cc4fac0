"""Chunks: a loss computed a few samples at a time, in bounded memory, with the same numbers.

A perceptual loss keeps every activation of its frozen trunk alive until ``backward()``: memory
grows with the batch. But the trunk is frozen, so all that backward needs of it is the gradient
of the loss with respect to the inputs, and each sample's loss depends on that sample only. So
:func:`chunked_values` runs the loss on ``chunk_size`` samples at a time and, when autograd wants
it, takes that chunk's input gradient at once (``torch.autograd.grad``), which frees the chunk's
activations before the next chunk starts. The returned ``(N,)`` values carry a small autograd
node that, in ``backward()``, hands the stored gradients back, scaled by the incoming gradient
of each sample. Peak memory is one chunk's activations plus the inputs and their gradients;
nothing is computed twice.

What it costs:

- under ``torch.no_grad()`` (or inputs that do not require grad) no gradient work is done at all;
- the handed-back gradient is a constant, so a double backward (a gradient penalty through the
  loss, ``create_graph=True``) cannot be exact: it raises an error instead of a wrong answer;
- ``torch.compile`` runs the chunks eagerly (the gradient taken inside ``forward`` is a graph
  break); compile the rest of the model;
- autocast applies inside each chunk as it would to the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

DOUBLE_BACKWARD = (
    "A loss computed in chunks (chunk_size=) hands back input gradients it took during forward, so it "
    "cannot be differentiated twice (create_graph=True, e.g. a gradient penalty through the loss). Use "
    "chunk_size=None for that loss."
)

ChunkFunction = Callable[[slice, Tensor, Tensor | None], Tensor]
"""``(samples, pred[samples], target[samples] or the shared target) -> (n,)`` values."""


def check_positive(option: str, value: Any, unit: str) -> int | None:
    """``value`` if it is ``None`` or a positive int; otherwise an error naming ``option``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive int ({unit}) or None; got {value!r}.")
    return value


class _HandBack(torch.autograd.Function):
    """``values`` (computed without a graph) whose backward returns the stored input gradients."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        values: Tensor,
        pred: Tensor,
        target: Tensor | None,
        pred_grad: Tensor | None,
        target_grad: Tensor | None,
    ) -> Tensor:
        ctx.save_for_backward(pred_grad, target_grad)
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad_values: Tensor) -> tuple[None, Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(DOUBLE_BACKWARD)
        pred_grad, target_grad = ctx.saved_tensors

        def scaled(grad: Tensor | None) -> Tensor | None:
            if grad is None:
                return None
            return grad * grad_values.to(grad.dtype).reshape(-1, *([1] * (grad.dim() - 1)))

        return None, scaled(pred_grad), scaled(target_grad), None, None


Index = tuple[slice, ...]
"""Where a piece lies in ``pred``: ``(samples,)`` for a chunk, ``(samples, channels, rows, cols)`` for a tile."""
PieceFunction = Callable[[Tensor, Tensor | None], Tensor]
"""``(pred[index], target[index] or the shared target) -> (n,)`` values of the piece's samples."""


def piecewise_values(pieces: Iterable[tuple[Index, PieceFunction]], pred: Tensor, target: Tensor | None) -> Tensor:
    """``(N,)`` per-sample values: the sum of every piece's values over its samples.

    Each piece is ``(index, compute)``: ``compute`` gets ``pred[index]`` and ``target[index]``
    (the whole ``target`` when it has another batch size: one style image for every prediction)
    as leaves, and returns the piece's share of each of its samples' values. With autograd on
    and ``pred`` (or an ``N``-sample ``target``) requiring grad, each piece's input gradients are
    taken as it runs, added up where pieces overlap (tiles with a halo), and handed back in
    ``backward()`` (see the module doc).

    Raises:
        ValueError: a piece returned something else than one value per sample, or a shared
            target requires grad (its gradient would mix the samples).
    """
    n = pred.shape[0]
    sliced_target = target is not None and target.shape[0] == n
    grad = torch.is_grad_enabled()
    need_pred = grad and pred.requires_grad
    need_target = grad and target is not None and target.requires_grad
    if need_target and not sliced_target:
        raise ValueError(
            "chunk_size= with a target shared by every sample that requires grad: its gradient mixes the samples. "
            "Detach the target, or use chunk_size=None."
        )
    pred_grad = torch.zeros_like(pred) if need_pred else None
    target_grad = torch.zeros_like(target) if need_target and target is not None else None
    total: Tensor | None = None
    for index, compute in pieces:
        p = pred[index].detach().requires_grad_(need_pred)
        t = None if target is None else (target[index] if sliced_target else target).detach()
        if t is not None and need_target:
            t.requires_grad_()
        with torch.set_grad_enabled(need_pred or need_target):
            value = compute(p, t)
        if value.dim() != 1 or value.shape[0] != p.shape[0]:
            raise ValueError(
                f"chunk_size= and tile= need one value per sample; this loss gives {tuple(value.shape)} for "
                f"{p.shape[0]} samples (a spatial map?). Use chunk_size=None and tile=None for maps."
            )
        if need_pred or need_target:
            inputs = [x for x, need in ((p, need_pred), (t, need_target)) if need and x is not None]
            grads = torch.autograd.grad(value.sum(), inputs)
            if pred_grad is not None:
                pred_grad[index] += grads[0]
            if target_grad is not None:
                target_grad[index] += grads[-1]
        if total is None:
            total = value.new_zeros(n)
        total[index[0]] += value.detach()
    assert total is not None, "no pieces"
    if not (need_pred or need_target):
        return total
    return _HandBack.apply(total, pred, target, pred_grad, target_grad)


def chunked_values(compute: ChunkFunction, pred: Tensor, target: Tensor | None, chunk_size: int) -> Tensor:
    """``(N,)`` per-sample values of ``compute`` over chunks of ``chunk_size`` samples
    (:func:`piecewise_values` with disjoint pieces of the batch)."""
    pieces = []
    for start in range(0, pred.shape[0], chunk_size):
        samples = slice(start, min(start + chunk_size, pred.shape[0]))
        pieces.append(((samples,), lambda p, t, samples=samples: compute(samples, p, t)))
    return piecewise_values(pieces, pred, target)
