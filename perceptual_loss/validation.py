"""Input checks shared by every loss: cheap, with the fix in every message, switchable off.

Shape, dtype, channel, device and size checks read only tensor metadata. The range check reads
values (one ``aminmax`` and one host read per call), is skipped while ``torch.compile`` traces
(so it never breaks a graph) and goes away with ``check_inputs=False`` on any loss.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import Tensor

from .backbones.inputs import IMAGES, InputSpec

logger = logging.getLogger(__name__)

Grayscale = Literal["repeat"] | None
Channels = Literal["each"] | None

RANGE_TOLERANCE = 0.25
"""Values may leave ``input_range`` by this fraction of its width before the range check fires:
resampled images overshoot a little; ``[0, 255]`` or ``[-1, 1]`` data given for ``(0, 1)`` does not."""


def check_image(x: Tensor, name: str, grayscale: Grayscale = None, spec: InputSpec = IMAGES) -> Tensor:
    """Check one ``(N, 3, H, W)`` floating-point image batch; returns it (repeated if grayscale).

    ``spec``: what the trunk takes, for a 3-D one ``(N, C, D, H, W)`` volumes of its channels.

    Raises:
        TypeError: not a tensor, or an integer/bool dtype.
        ValueError: not 4-D, or a channel count other than 3 (1 is allowed with
            ``grayscale="repeat"``).
    """
    if spec != IMAGES:
        return _check_volume(x, name, spec)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 3, H, W); got {type(x).__name__}.")
    if x.dim() != 4:
        hint = {
            3: " Add a batch dimension with x.unsqueeze(0).",
            5: " For clips (N, C, T, H, W) or volumes (N, C, D, H, W), wrap the loss: "
            "SlicedLoss(loss, dims=(2,)) scores frames, SlicedLoss(loss, dims=(2, 3, 4)) slices along every axis.",
        }.get(x.dim(), "")
        raise ValueError(f"{name} must be 4-D (N, 3, H, W); got shape {tuple(x.shape)}.{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected a floating-point image. Convert 8-bit images with "
            f"x.float() / 255 for input_range=(0, 1)."
        )
    channels = x.shape[1]
    if channels == 1 and grayscale == "repeat":
        return x.expand(-1, 3, -1, -1)
    if channels != 3:
        fix = {
            1: " Pass grayscale='repeat' to repeat a single channel as RGB, or channels='each'.",
            4: " Four channels look like RGBA: drop alpha with x[:, :3] (or composite it over a background "
            "first); for four channels of data (e.g. MRI contrasts) pass channels='each' to score each as a "
            "grayscale image.",
        }.get(channels, " Pass channels='each' to score each channel as a grayscale image and average.")
        raise ValueError(f"{name} must have 3 channels (RGB) in dim 1; got shape {tuple(x.shape)}.{fix}")
    return x


def _check_volume(x: Tensor, name: str, spec: InputSpec) -> Tensor:
    """Check a ``(N, C, D, H, W)`` batch for a 3-D trunk of ``spec.channels`` input channels."""
    expected = f"(N, {spec.channels}, D, H, W)"
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}; got {type(x).__name__}.")
    if x.dim() != 5:
        raise ValueError(f"{name} must be 5-D {expected} for this 3-D network; got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected floating-point volumes.")
    if x.shape[1] != spec.channels:
        fix = " Pass channels='each' to score each channel as its own volume." if spec.channels == 1 else ""
        raise ValueError(f"{name} must have {spec.channels} channel(s) in dim 1; got shape {tuple(x.shape)}.{fix}")
    return x


def float_pair(pred: Tensor, target: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """A pair of ``(N, C, H, W)`` float images of one shape, any ``C`` (the pixel-domain losses'
    check), as float32 (float64 stays) copies; errors are prefixed with ``name``."""
    for label, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: {label} must be a 4-D (N, C, H, W) tensor; got {shape}.")
        if not x.is_floating_point():
            raise TypeError(f"{name}: {label} has dtype {x.dtype}; expected floating-point images.")
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    dtype = torch.promote_types(pred.dtype, torch.float32)
    return pred.to(dtype), target.to(dtype)


def check_channels_each(pred: Tensor, target: Tensor, spec: InputSpec = IMAGES) -> None:
    """``channels="each"`` needs 4-D pairs (5-D for a 3-D trunk) with one channel count (its
    metadata checks, before the split)."""
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() != 2 + spec.spatial_dims:
            check_image(x, name, spec=spec)  # raises, naming the fix
    if pred.shape[1] != target.shape[1]:
        raise ValueError(
            f"pred and target must have the same channels; got {tuple(pred.shape)} and {tuple(target.shape)}."
        )


def split_channels(
    pred: Tensor, target: Tensor | None, mask: Tensor | None, spec: InputSpec = IMAGES
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``channels="each"``: ``(N, C, ...)`` -> ``(N*C, 1, ...)`` grayscale images (a target of batch 1
    expanded to ``N`` first), the mask repeated per channel; checked (:func:`check_channels_each`)."""
    if target is not None:
        check_channels_each(pred, target, spec)
    n, c = pred.shape[:2]
    if target is not None and target.shape[0] == 1 and n > 1:  # one style target for every prediction
        target = target.expand(n, *target.shape[1:])
    if mask is not None and mask.dim() == pred.dim() and mask.shape[1] == 1:
        mask = mask.expand(n, *mask.shape[1:]).repeat_interleave(c, dim=0)
    gray = pred.reshape(n * c, 1, *pred.shape[2:])
    return gray, None if target is None else target.reshape(n * c, 1, *target.shape[2:]), mask


def check_pair(
    pred: Tensor,
    target: Tensor,
    *,
    min_size: int,
    layers_note: str,
    fixed_size: int | None = None,
    grayscale: Grayscale = None,
    same_size: bool = True,
    spec: InputSpec = IMAGES,
) -> tuple[Tensor, Tensor]:
    """Check a prediction/target pair of image batches; returns them (grayscale repeated).

    Args:
        min_size: smallest allowed height and width.
        layers_note: names the layers that impose ``min_size`` (for the message).
        fixed_size: the one height and width allowed (a ViT without ``resize``), or ``None``.
        same_size: require equal shapes; otherwise only equal channels and a target batch of
            ``N`` or ``1`` (style targets).

    Raises:
        TypeError, ValueError: see :func:`check_image`; plus mismatched shapes or devices and
            images smaller than ``min_size``.
    """
    pred = check_image(pred, "pred", grayscale, spec)
    target = check_image(target, "target", grayscale, spec)
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}; move both to one device.")
    if same_size and pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if not same_size and target.shape[0] not in (1, pred.shape[0]):
        raise ValueError(
            f"target must have batch size 1 or the same as pred ({pred.shape[0]}); got {tuple(target.shape)}."
        )
    for name, x in (("pred", pred), ("target", target)):
        check_size(x, name, min_size, layers_note, fixed_size)
    return pred, target


def check_size(x: Tensor, name: str, min_size: int, layers_note: str, fixed_size: int | None = None) -> None:
    """``x``'s height and width are at least ``min_size`` (exactly ``fixed_size`` if given)."""
    if fixed_size is not None and tuple(x.shape[-2:]) != (fixed_size, fixed_size):
        raise ValueError(
            f"{name} of size {x.shape[-2]}x{x.shape[-1]} does not fit {layers_note}: the backbone takes "
            f"{fixed_size}x{fixed_size} images only. Pass resize={fixed_size} to resize them inside the loss."
        )
    if min(x.shape[2:]) < min_size:
        raise ValueError(
            f"{name} of size {'x'.join(map(str, x.shape[2:]))} is too small for {layers_note}: height and "
            f"width must be at least {min_size}. Use larger images, shallower layers, or resize=."
        )


def check_range(
    pred: Tensor | None, target: Tensor | None, input_range: tuple[float, float], warned: list[bool]
) -> None:
    """Error if data is clearly outside ``input_range``; log a warning once for a network's output.

    A network's output legitimately overshoots during training, and a days-long run should not
    die of it: ``pred``, and a ``target`` that requires grad (VQGAN-style code passes the
    reconstruction second: ``loss(inputs, reconstructions)``), only get a warning. A ``target``
    without grad is data, so a wrong range is a bug: an error. ``warned`` is a one-element list
    owned by the caller to warn only once. One host read in all.
    """
    if torch.compiler.is_compiling():
        return
    low, high = input_range
    margin = RANGE_TOLERANCE * (high - low)
    target_is_output = target is not None and target.requires_grad
    outputs = [
        (name, x) for name, x in (("pred", pred), ("target", target if target_is_output else None)) if x is not None
    ]
    checked = [("target", target)] if target is not None and not target_is_output else []
    if not warned[0]:
        checked += outputs
    checked = [(name, x) for name, x in checked if x.numel()]  # an empty batch has no values to check
    if not checked:
        return
    values = torch.stack([v for _, x in checked for v in torch.aminmax(x.detach())]).tolist()
    for index, (name, _) in enumerate(checked):
        v_min, v_max = values[2 * index : 2 * index + 2]
        is_data = name == "target" and not target_is_output
        finite = math.isfinite(v_min) and math.isfinite(v_max)
        if is_data and not finite:
            raise ValueError("target contains NaN or Inf values; check the data pipeline.")
        if not finite:
            warned[0] = True
            logger.warning(
                "%s contains NaN or Inf values, so the loss is NaN too: the network that produced it has most likely "
                "diverged (lower the learning rate, clip gradients, or look for fp16 overflow). (warned once)",
                name,
            )
            return
        if low - margin <= v_min and v_max <= high + margin:
            continue
        if is_data:
            raise ValueError(
                f"target values span [{v_min:.3g}, {v_max:.3g}], clearly outside input_range=({low:g}, {high:g}). "
                f"{_range_hint(v_min, v_max, low, high)} Pass check_inputs=False to skip this check."
            )
        warned[0] = True
        logger.warning(
            "%s values span [%.3g, %.3g], clearly outside input_range=(%g, %g). %s (warned once)",
            name, v_min, v_max, low, high, _range_hint(v_min, v_max, low, high, output=True),
        )  # fmt: skip
        return


def _range_hint(v_min: float, v_max: float, low: float, high: float, output: bool = False) -> str:
    """What the span suggests: 8-bit data, [-1, 1] data, or (for a network's output) overshoot."""
    tolerance = RANGE_TOLERANCE
    if v_min >= -tolerance and 20.0 <= v_max <= 255.0 + tolerance and high < 20.0:
        return "This looks like [0, 255] data: divide by 255, or set input_range=(0, 255)."
    # An output overshooting (0, 1) a little (say to -0.4) is not [-1, 1] data; a tanh output reaches -1.
    lowest = -0.75 if output else -tolerance
    if (low, high) == (0.0, 1.0) and -1.0 - tolerance <= v_min < lowest and v_max <= 1.0 + tolerance:
        return "This looks like [-1, 1] data: use input_range=(-1, 1), or map it with (x + 1) / 2."
    if output:
        return (
            "A network's output overshoots early in training, which is harmless then; if it persists, end the "
            f"network with a bounded activation or clamp its output to ({low:g}, {high:g})."
        )
    return f"Rescale the images to ({low:g}, {high:g}) or set input_range to their range."


def check_module_compatible(pred: Tensor, target: Tensor, reference: Tensor) -> None:
    """Inputs must be on the loss's device and, outside autocast, of its dtype."""
    if pred.device != reference.device:
        raise ValueError(
            f"Inputs are on {pred.device} but the loss is on {reference.device}; call loss.to({str(pred.device)!r})."
        )
    if not torch.is_autocast_enabled(pred.device.type):
        for name, x in (("pred", pred), ("target", target)):
            if x.dtype != reference.dtype:
                raise TypeError(
                    f"{name} has dtype {x.dtype} but the loss's weights are {reference.dtype}; call "
                    f"loss.to({x.dtype}), cast the input, or run under torch.autocast."
                )


def check_mask(mask: Tensor | None, pred: Tensor, check_values: bool, warned: list[bool]) -> Tensor | None:
    """Check a mask against the (checked) prediction; returns it as a float tensor, or ``None``.

    A mask is ``(N, 1, H, W)`` or ``(1, 1, H, W)`` at the images' size, on their device, bool or
    float weights in ``[0, 1]``. Metadata is always checked; values (NaN, range, samples whose
    mask is empty, which give 0 and one warning) only with ``check_values`` (one host sync), and
    never under ``torch.compile``. The mask itself is never modified.

    Raises:
        TypeError: not a tensor, or an integer dtype other than bool.
        ValueError: wrong shape or device, NaN, values outside ``[0, 1]``.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor of shape (N, 1, H, W) or None; got {type(mask).__name__}.")
    if pred.dim() != 4:
        raise ValueError(f"mask= weighs 2-D images; pred has shape {tuple(pred.shape)}. Score volumes without a mask.")
    n, _, height, width = pred.shape
    if (
        mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[0] not in (1, n)
        or tuple(mask.shape[-2:]) != (height, width)
    ):
        raise ValueError(
            f"mask must have shape ({n}, 1, {height}, {width}) or (1, 1, {height}, {width}) to match pred "
            f"{tuple(pred.shape)}; got {tuple(mask.shape)}. Use mask[:, None] for (N, H, W) masks."
        )
    if mask.device != pred.device:
        raise ValueError(f"mask is on {mask.device} but pred is on {pred.device}; move it with mask.to(pred.device).")
    if mask.dtype == torch.bool:
        mask = mask.to(pred.dtype if pred.is_floating_point() else torch.float32)
    elif not mask.is_floating_point():
        raise TypeError(f"mask has dtype {mask.dtype}; pass bool, or float weights in [0, 1].")
    if check_values and not torch.compiler.is_compiling():
        if not mask.numel():
            return mask
        low, high, empty = torch.stack(
            [mask.min(), mask.max(), (mask.flatten(1).sum(1) == 0).any().to(mask.dtype)]
        ).tolist()
        if math.isnan(low) or math.isnan(high):
            raise ValueError("mask contains NaN; masks are weights in [0, 1].")
        if low < 0 or high > 1:
            raise ValueError(f"mask values span [{low:.3g}, {high:.3g}]; masks are weights in [0, 1] (or bool).")
        if empty and not warned[0]:
            warned[0] = True
            logger.warning("A sample's mask is empty (all zeros): its masked loss is 0. (warned once)")
    return mask
