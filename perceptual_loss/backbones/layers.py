"""Layers that replace torchvision's in a frozen trunk: same values and gradients, less memory,
or no state that a parent's ``.train()`` or DistributedDataParallel could touch.

- :class:`MaxPool2dRecomputingIndices`: a max-pool that keeps no int64 argmax for backward;
- :class:`FireSharingOutput`: SqueezeNet's Fire module keeping its output once for backward;
- :class:`FrozenBatchNorm`: eval-mode BatchNorm whose statistics are frozen parameters, not
  buffers (never updated, never re-broadcast by DDP).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from ..frozen import mode_free
from .architectures import Fire


def saving_less_for_backward(layers: nn.Sequential) -> nn.Sequential:
    """Swap a classic trunk's max-pools and Fire modules for ones that compute the same values
    and gradients but keep less for backward (see :class:`MaxPool2dRecomputingIndices`,
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
    def forward(
        ctx, x: Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool
    ) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.pool_args = (kernel, stride, padding, dilation, ceil_mode)
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode = ctx.pool_args
        _, indices = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, kernel, stride, padding, dilation, ceil_mode, indices
        )
        return grad_x, None, None, None, None, None


@mode_free
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


@mode_free
class FireSharingOutput(Fire):
    """SqueezeNet's ``Fire`` whose expand activations are not kept twice for backward.

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


class _FrozenBatchNormFunction(torch.autograd.Function):
    """Eval-mode batch norm that keeps nothing of its input for backward.

    Forward is ``F.batch_norm(..., training=False)`` itself (same values, bit for bit); with
    frozen statistics and affine parameters its input gradient is ``grad * weight / sqrt(var +
    eps)``, which needs no activation. Autograd's batch norm keeps its input (a convolution's
    output, which nothing else keeps): a feature map per BatchNorm layer.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(var, weight)
        ctx.eps, ctx.dtype = eps, x.dtype
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None, None]:  # type: ignore[override]
        var, weight = ctx.saved_tensors
        scale = torch.rsqrt(var.float() + ctx.eps)
        if weight is not None:
            scale = scale * weight.float()
        shape = [1, -1] + [1] * (grad.dim() - 2)
        return (grad * scale.view(shape).to(grad.dtype)).to(ctx.dtype), None, None, None, None, None


@mode_free
class FrozenBatchNorm(nn.Module):
    """A BatchNorm layer in eval mode for good: its running statistics are frozen parameters.

    ``forward`` is ``F.batch_norm(x, running_mean, running_var, weight, bias, training=False)``,
    the very call an ``nn.BatchNorm*d`` in eval mode makes, so values are bit for bit the same;
    its backward keeps nothing of the input (see :class:`_FrozenBatchNormFunction`). Holding the
    statistics as (frozen) parameters instead of buffers means no ``train()`` can make them
    update, and DistributedDataParallel does not broadcast them on every forward call. Parameter
    names (``weight``, ``bias``, ``running_mean``, ``running_var``) are those of torchvision's
    layer; ``num_batches_tracked`` is dropped (eval mode never reads it).
    """

    def __init__(self, source: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        if source.running_mean is None or source.running_var is None:
            raise ValueError(f"{type(source).__name__} without running statistics cannot be frozen.")
        self.eps = source.eps
        self.running_mean = nn.Parameter(source.running_mean.detach(), requires_grad=False)
        self.running_var = nn.Parameter(source.running_var.detach(), requires_grad=False)
        self.weight = None if source.weight is None else nn.Parameter(source.weight.detach(), requires_grad=False)
        self.bias = None if source.bias is None else nn.Parameter(source.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _FrozenBatchNormFunction.apply(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.eps
            )
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.running_mean.shape[0]}, eps={self.eps}"


L2_POOL_EPS = 1e-12
"""Added under the L2-pool's square root, as ``DISTS_pytorch`` does (computed in float32)."""


def hann_filter() -> Tensor:
    """DISTS' 3x3 pooling window: ``hanning(5)[1:-1]`` outer itself, normalised to sum 1."""
    taps = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    window = taps[:, None] * taps[None, :]
    return (window / window.sum()).float().view(1, 1, 3, 3)


class _L2Pool(torch.autograd.Function):
    """``sqrt(conv(x^2, g) + eps)`` (depthwise, padding 1), saving only ``x`` and the output.

    Both are kept anyway (the ReLU before keeps ``x``, the convolution after keeps the output),
    so the pool costs no memory for backward; autograd's version would also keep ``x^2``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, window: Tensor, stride: int) -> Tensor:  # type: ignore[override]
        weight = window.to(x.dtype).expand(x.shape[1], 1, 3, 3)
        pooled = F.conv2d(x.square(), weight, stride=stride, padding=1, groups=x.shape[1])
        out = pooled.add_(L2_POOL_EPS).sqrt_()
        ctx.save_for_backward(x, out, weight)
        ctx.stride = stride
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        x, out, weight = ctx.saved_tensors
        # d out / d pooled = 1 / (2 out);  d pooled / d x^2 = the convolution's transpose;  d x^2 / d x = 2 x
        grad_pooled = grad / out
        # aten's convolution_backward given the saved input, not torch.nn.grad.conv2d_input: that
        # passes an expanded dummy input, so oneDNN returns an NCHW gradient for a channels_last
        # trunk and the ops after it mix layouts (the pool's backward was 3-6x slower on CPU).
        grad_squares = torch.ops.aten.convolution_backward(
            grad_pooled,
            x,
            weight,
            None,
            [ctx.stride] * 2,
            [1, 1],
            [1, 1],
            False,
            [0, 0],
            x.shape[1],
            (True, False, False),
        )[0]
        return grad_squares.mul_(x), None, None


@mode_free
class L2Pool2d(nn.Module):
    """DISTS' L2-pool (Ding et al., 2020): ``sqrt(hann3x3 * x^2 + eps)``, stride 2, padding 1.

    It replaces VGG16's max-pools in DISTS (and ``pooling="l2"`` elsewhere): an anti-aliased,
    smooth downsampling. Computed in at least float32 with autocast off, so ``eps`` (1e-12) does
    not underflow in fp16 and the square root's gradient stays finite; the result returns in the
    input's dtype. The window is a frozen parameter (DDP syncs it once, never per step).

    Args:
        stride: 2 in DISTS; another value for ``pool_stride``.

    Shape: ``(N, C, H, W)`` -> ``(N, C, ceil(H / 2), ceil(W / 2))`` (stride 2).
    """

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.window = nn.Parameter(hann_filter(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        outside = torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext()
        with outside:
            wide = x.to(torch.promote_types(x.dtype, torch.float32))
            return _L2Pool.apply(wide, self.window, self.stride).to(x.dtype)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
