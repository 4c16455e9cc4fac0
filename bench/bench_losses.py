"""Speed and memory of the library's losses against the bare truncated torchvision backbone.

What is measured: one training-like step per case, ``loss(pred, target).backward()`` with ``pred``
a leaf that requires grad and ``target`` a plain tensor (the same two tensors for every case).

Cases: ``PerceptualLoss`` (VGG16 relu2_2..relu5_3, with and without ``check_inputs``; VGG19
conv5_4), ``StyleLoss`` (default layers), ``LPIPSLoss`` (vgg, alex, squeeze) and, when the package
is importable, the peer ``lpips.LPIPS(net="vgg")`` fed the same images mapped to ``[-1, 1]``
(note: lpips runs the target with autograd and its linear heads require grad: its real behaviour).
The losses are built with ``weights=None``: random weights cost the same time and memory.

The floor of a case is the bare truncated backbone that any loss on those layers has to run:
``torchvision.models.<arch>(weights=None).features[:last + 1]`` (frozen, eval), input normalised
the plain way ``(x - mean) / std``, pred with autograd, target under ``torch.no_grad()``, an L1
(mean absolute difference) of the last layer's outputs, backward to pred. Ratios are loss / floor.
Each floor runs twice: as torchvision ships it (NCHW), and with its weights and input in
``torch.channels_last`` ("CL"), which is how the library's extractors run on CPU and CUDA (faster there),
so that "ratio CL" isolates what the loss adds on top of the same convolutions.

Time: 2 warm-up steps, then the median of ``--iters`` steps (``time.perf_counter``, CUDA
synchronised). The cases are interleaved round-robin: every iteration runs each case once, in a
freshly shuffled order (fixed seed), so that drift of the machine hits every case alike and no
case always follows the same one (a step right after a VGG step finds cold caches and a trimmed
heap, which can slow small networks such as AlexNet by tens of percent). ``torch``'s default thread
count is kept.

Peak memory: after the timing, one more step per case, reporting the peak of tensor memory
allocated during the step above what was allocated just before it (weights, inputs), i.e. the
activations and gradients the step itself needs:
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``torch.cuda.memory_allocated`` before the step.
- CPU: the same quantity from the allocation and free events that ``torch.profiler``
  (``profile_memory=True``) records for PyTorch's CPU allocator: the maximum of their running sum
  within the step. It is deterministic and, unlike peak RSS, needs no fresh process per case
  (on a small CPU those cost more than the timing); checked against the peak-RSS rise of one
  fresh process per case (``VmHWM``, glibc mmap threshold pinned at 64 KiB), every case agreed
  within 1 %. Memory outside PyTorch's allocator (e.g. oneDNN scratch space) is not counted,
  as on CUDA. Kineto may print a few ``profiler_start``/``profiler_stop`` lines on stderr.

The header reports the 1-minute load average before and after the run: other busy processes on
the machine make timings unreliable, small networks' most (at 2 threads on 2 busy cores their
short steps can take 10x longer); rerun when it is quiet, or with more ``--iters``.

Run (2-3 minutes on 2 idle CPU cores with the defaults)::

    python bench/bench_losses.py                       # all cases, CPU (or CUDA if available)
    python bench/bench_losses.py --device cuda --batch 16 --size 256 --out bench/results.md
    python bench/bench_losses.py --cases perceptual-vgg16,lpips-alex --iters 5
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _common import (
    LPIPS_FLOORS,
    MEASUREMENT_NOTE,
    Floor,
    Inputs,
    Step,
    add_step_arguments,
    emit_report,
    floor_step,
    parse_with_cases,
    peak_mb,
    step_header,
    time_steps,
)
from torch import nn

from perceptual_loss import LPIPSLoss, MissingWeightsError, PerceptualLoss, StyleLoss
from perceptual_loss.losses import FeatureLoss


@dataclass(frozen=True)
class Case:
    """A loss to time against its floor; ``signed`` feeds it the images mapped to ``[-1, 1]``;
    ``masked`` passes a mask of the central half of each side (a quarter of the image)."""

    key: str
    label: str
    floor: Floor
    build: Callable[[], nn.Module]
    signed: bool = False
    masked: bool = False


def _lpips_peer(net: str) -> nn.Module:
    import lpips  # an optional peer: a missing package skips its row

    with warnings.catch_warnings():  # lpips builds its trunk with torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net=net, verbose=False, pnet_rand=True)


VGG16_TO_RELU5_3, VGG19_TO_CONV5_4, VGG16_TO_RELU4_3 = Floor("vgg16", 29), Floor("vgg19", 34), Floor("vgg16", 22)
CASES: tuple[Case, ...] = (
    Case(
        "perceptual-vgg16",
        "PerceptualLoss vgg16 relu2_2,3_3,4_3,5_3",
        VGG16_TO_RELU5_3,
        lambda: PerceptualLoss(["relu2_2", "relu3_3", "relu4_3", "relu5_3"], weights=None),
    ),
    Case(
        "perceptual-vgg16-nocheck",
        "PerceptualLoss vgg16 relu2_2,3_3,4_3,5_3, check_inputs=False",
        VGG16_TO_RELU5_3,
        lambda: PerceptualLoss(["relu2_2", "relu3_3", "relu4_3", "relu5_3"], weights=None, check_inputs=False),
    ),
    Case(
        "perceptual-vgg19",
        "PerceptualLoss vgg19 conv5_4",
        VGG19_TO_CONV5_4,
        lambda: PerceptualLoss({"conv5_4": 1.0}, backbone="vgg19", weights=None),
    ),
    Case("style-vgg16", "StyleLoss vgg16 relu1_2,2_2,3_3,4_3", VGG16_TO_RELU4_3, lambda: StyleLoss(weights=None)),
    Case("lpips-vgg", "LPIPSLoss vgg", VGG16_TO_RELU5_3, lambda: LPIPSLoss(net="vgg", weights=None)),
    Case("peer-lpips-vgg", "peer: lpips.LPIPS vgg", VGG16_TO_RELU5_3, lambda: _lpips_peer("vgg"), signed=True),
    Case("lpips-alex", "LPIPSLoss alex", LPIPS_FLOORS["alex"], lambda: LPIPSLoss(net="alex", weights=None)),
    Case("lpips-squeeze", "LPIPSLoss squeeze", LPIPS_FLOORS["squeeze"], lambda: LPIPSLoss(net="squeeze", weights=None)),
)
COMPILED: tuple[Case, ...] = tuple(
    Case(f"lpips-{net}-compiled", f"LPIPSLoss {net}, torch.compile (eager floor)", floor,
         lambda net=net: torch.compile(LPIPSLoss(net=net, weights=None)))  # type: ignore[misc]
    for net, floor in (("alex", LPIPS_FLOORS["alex"]), ("squeeze", LPIPS_FLOORS["squeeze"]))
)  # fmt: skip
"""Opt-in (``--cases``): LPIPS compiled with the default inductor backend, against the eager floor.
On a GPU, small trunks are bound by the host's per-operator cost, which compilation removes."""
MASKED: tuple[Case, ...] = tuple(
    Case(f"{case.key}-masked", f"{case.label}, mask=", case.floor, case.build, masked=True)
    for case in CASES
    if case.key in ("perceptual-vgg16", "style-vgg16", "lpips-vgg")
)
"""Opt-in (``--cases``): the same losses with a mask, against their unmasked rows (issue target:
a masked step costs at most 1.1x the unmasked one)."""
CASE_BY_KEY = {case.key: case for case in CASES + COMPILED + MASKED}
SKIPPABLE = (ImportError, MissingWeightsError)
"""Errors that mean "this case cannot run here" (a peer or lpips' head files missing)."""


def loss_step(case: Case, inputs: Inputs, device: torch.device) -> tuple[Step, float | None]:
    """``loss(pred, target).mean().backward()`` (``.mean()``: lpips returns ``(N, 1, 1, 1)``).

    Also returns the MB of what the loss keeps of the target through the step (its prepared target:
    the taps for PerceptualLoss, Gram matrices for StyleLoss, normalised taps for LPIPSLoss), which
    no bare backbone keeps; ``None`` for the peer.
    """
    loss = case.build().to(device)
    pred, target = (inputs.pred_signed, inputs.target_signed) if case.signed else (inputs.pred, inputs.target)
    kept = None
    if isinstance(loss, FeatureLoss):
        with torch.no_grad():
            kept = sum(t.numel() * t.element_size() for t in loss.target_features(target).values()) / 2**20

    mask = None
    if case.masked:
        n, _, height, width = pred.shape
        mask = torch.zeros(n, 1, height, width, device=device)
        mask[..., height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1

    def step() -> None:
        (loss(pred, target) if mask is None else loss(pred, target, mask=mask)).mean().backward()
        inputs.clear_grads()
        loss.zero_grad(set_to_none=True)

    return step, kept


def format_table(rows: list[tuple[Case, dict[str, float], dict[str, float]]], kept: dict[str, float | None]) -> str:
    """One row per case: the loss against its floor in the default layout and in channels_last."""
    lines = [
        "| case | floor | ms floor | ms floor CL | ms loss | ratio | ratio CL "
        "| MB floor | MB floor CL | MB loss | ratio | ratio CL | MB target kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, ms, mb in rows:
        f, cl, c = case.floor.key, case.floor.as_channels_last().key, case.key
        kept_mb = kept.get(c)
        lines.append(
            f"| {case.label} | {f} | {ms[f]:.1f} | {ms[cl]:.1f} | {ms[c]:.1f} | {ms[c] / ms[f]:.2f} | {ms[c] / ms[cl]:.2f} "
            f"| {mb[f]:.1f} | {mb[cl]:.1f} | {mb[c]:.1f} | {mb[c] / mb[f]:.2f} | {mb[c] / mb[cl]:.2f} "
            f"| {'-' if kept_mb is None else f'{kept_mb:.1f}'} |"
        )
    return "\n".join(lines)


NOTES = (
    "Losses built with weights=None (random weights: speed and memory do not depend on weight values); "
    "check_inputs=True (the default) unless the row says otherwise.\n"
    "floor: torchvision.models.<arch>(weights=None).features[:k], frozen, (x-mean)/std, pred with autograd, "
    "target under no_grad, L1 of the last output, backward to pred; run as torchvision ships it (NCHW), and "
    "with weights and input in channels_last (CL, what the library's extractors do on CPU and CUDA).\n"
    "MB target kept: what the loss must hold of the target until backward (taps, Gram matrices, or LPIPS' "
    "normalised taps), which the bare backbone does not keep; loss MB is about floor MB plus this.\n"
    "peer lpips.LPIPS: fed 2x-1; it runs the target with autograd and its linear heads require grad.\n"
    + MEASUREMENT_NOTE
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    return parse_with_cases(
        parser, CASE_BY_KEY, (case.key for case in CASES), " (default: all but *-compiled and *-masked)"
    )


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    inputs = Inputs.random((args.batch, 3, args.size, args.size), device)
    steps: dict[str, Step] = {}
    kept: dict[str, float | None] = {}
    skipped: list[str] = []
    for case in (CASE_BY_KEY[key] for key in args.cases):
        try:
            steps[case.key], kept[case.key] = loss_step(case, inputs, device)
        except SKIPPABLE as error:
            skipped.append(f"{case.key} ({type(error).__name__}: {error})")
            continue
        for floor in (case.floor, case.floor.as_channels_last()):
            if floor.key not in steps:
                steps[floor.key] = floor_step(floor, inputs, device)

    ms = time_steps(steps, args.iters, device)
    mb = peak_mb(steps, device)

    rows = [(CASE_BY_KEY[key], ms, mb) for key in args.cases if key in steps]
    emit_report([step_header(args, device, load_before), format_table(rows, kept), NOTES], skipped, args.out)


if __name__ == "__main__":
    main()
