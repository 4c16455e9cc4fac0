"""A memory budget: ``max_memory="2GiB"`` picks ``chunk_size`` (and ``tile``) from the trunk's activation sizes.

A frozen trunk's backward needs what its forward saved: for an image of a given size that is a
known number of bytes, counted here by running the trunk once on the meta device (nothing is
computed) with autograd's saved-tensor hooks, less the weights (saved by reference), plus the
features the comparison keeps. With ``max_memory`` set, a loss plans each new input shape:

- the whole batch fits: one pass, as without a budget;
- one sample fits: chunks of as many samples as fit (see :mod:`perceptual_loss.chunks`);
- one sample does not fit and the loss can tile (perceptual and LPIPS on the classic trunks):
  the largest tile, a multiple of 64 pixels, whose grown tile fits (see :mod:`perceptual_loss.tiles`);
- otherwise one sample at a time, with a warning that the budget is below one sample's need.

The budget counts the loss's own working memory (activations held for backward, features), not
the inputs, their gradients, the weights or the process; the estimate is an upper bound within
a few percent for the classic trunks (``bench/bench_memory.py --budgets`` shows the curve).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30})
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: int | str | None, option: str = "max_memory") -> int | None:
    """Bytes of ``"2GiB"``, ``"512MB"``, ``"1.5 GiB"``, ``"800M"`` (binary) or an int of bytes; ``None`` stays.

    Raises:
        ValueError: anything else, naming ``option`` and the forms it takes.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _MEMORY.match(value) if isinstance(value, str) else None
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ValueError(
            f"{option}={value!r} is not a memory size: write e.g. '2GiB', '512MB', '1.5 GiB' or a positive int "
            "of bytes (GB = 10^9 bytes, GiB and G = 2^30)."
        )
    return math.floor(float(match.group(1)) * _UNITS[unit])


def activation_bytes(extractors: Sequence[nn.Module], shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes one sample of ``shape`` (``(C, H, W)``) needs in ``extractors`` with autograd: what each
    trunk saves for backward (weights excluded) plus twice its features (the comparison's copies)."""
    return sum(_one_sample_bytes(extractor, shape, dtype) for extractor in extractors)


def _one_sample_bytes(extractor: nn.Module, shape: Sequence[int], dtype: torch.dtype) -> int:
    from .backbones import graph

    copy = graph.meta_copy(extractor).to(dtype)
    weights = {id(p) for p in copy.parameters()}
    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        # Every saved reference counts, also a tensor two nodes save (a ReLU's output, saved by the
        # ReLU and by the next convolution): backward holds a gradient as large as each of them at
        # its peak. Counted once each, the estimate falls 1.5x short of the measured peaks
        # (bench_memory.py --budgets: LPIPS-vgg at 256², 137 MB a sample counted, 160-217 measured).
        if id(t) not in weights and not isinstance(t, nn.Parameter):
            saved += t.numel() * t.element_size()
        return t

    x = torch.empty(1, *shape, device="meta", dtype=dtype, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        features = copy(x)
    return saved + 2 * sum(f.numel() * f.element_size() for f in features.values())


def describe(size: int) -> str:
    """``2147483648`` -> ``'2.0 GiB'``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class Plan:
    """What a budget allows for one input shape: ``chunk_size`` and ``tile`` (``None``: not
    needed), the bytes one sample needs, and whether the budget is met at all."""

    chunk_size: int | None
    tile: int | None
    per_sample: int
    met: bool = True


def plan_memory(
    extractors: Sequence[nn.Module], shape: Sequence[int], dtype: torch.dtype, budget: int, halo: int | None = None
) -> Plan:
    """The plan for a batch of ``shape`` ``(N, C, H, W)`` under ``budget`` bytes (see the module doc);
    ``halo``: the trunk's tile halo where the loss can tile, else ``None``."""
    n, sample = shape[0], tuple(shape[1:])
    per_sample = activation_bytes(extractors, sample, dtype)
    if per_sample * n <= budget:
        return Plan(None, None, per_sample)
    if per_sample <= budget:
        return Plan(budget // per_sample, None, per_sample)
    if halo is not None:
        height, width = sample[-2], sample[-1]
        sides = range(64 * max(1, -(-2 * halo // 64)), max(height, width), 64)

        def need(side: int) -> int:
            crop = (sample[0], min(height, side + 2 * halo), min(width, side + 2 * halo))
            return activation_bytes(extractors, crop, dtype)

        low, high = 0, len(sides)  # need() grows with the side: the last fitting one by bisection
        while low < high:
            middle = (low + high) // 2
            if need(sides[middle]) <= budget:
                low = middle + 1
            else:
                high = middle
        if low:  # as few tiles as the largest fitting side needs, made even (no thin last tile)
            longest = max(height, width)
            pieces = -(-longest // sides[low - 1])
            return Plan(1, 64 * -(-longest // (64 * pieces)), per_sample)
    return Plan(1, None, per_sample, met=False)
