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

from collections.abc import Callable
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


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` if it is ``None`` or a positive int; otherwise an error naming the option."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (samples per chunk) or None; got {chunk_size!r}.")
    return chunk_size


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


def chunked_values(compute: ChunkFunction, pred: Tensor, target: Tensor | None, chunk_size: int) -> Tensor:
    """``(N,)`` per-sample values of ``compute`` over chunks of ``chunk_size`` samples.

    ``target`` is sliced like ``pred`` when it has ``N`` samples, and passed whole otherwise (one
    style image for every prediction). With autograd on and ``pred`` (or an ``N``-sample
    ``target``) requiring grad, each chunk's input gradients are taken as it runs and handed back
    in ``backward()`` (see the module doc).

    Raises:
        ValueError: ``compute`` returned something else than one value per sample, or a shared
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
    values = []
    for start in range(0, n, chunk_size):
        samples = slice(start, min(start + chunk_size, n))
        p = pred[samples].detach().requires_grad_(need_pred)
        t = None if target is None else (target[samples] if sliced_target else target).detach()
        if t is not None and need_target:
            t.requires_grad_()
        with torch.set_grad_enabled(need_pred or need_target):
            value = compute(samples, p, t)
        if value.dim() != 1 or value.shape[0] != p.shape[0]:
            raise ValueError(
                f"chunk_size= needs one value per sample; this loss gives {tuple(value.shape)} for {p.shape[0]} "
                "samples (a spatial map?). Use chunk_size=None for maps."
            )
        if need_pred or need_target:
            inputs = [x for x, need in ((p, need_pred), (t, need_target)) if need and x is not None]
            grads = torch.autograd.grad(value.sum(), inputs)
            if pred_grad is not None:
                pred_grad[samples] = grads[0]
            if target_grad is not None:
                target_grad[samples] = grads[-1]
        values.append(value.detach())
    joined = torch.cat(values)
    if not (need_pred or need_target):
        return joined
    return _HandBack.apply(joined, pred, target, pred_grad, target_grad)
