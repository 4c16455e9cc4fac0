"""Speed and memory of ``CombinedLoss`` (one shared VGG16 pass) against the bare backbone and peers.

What is measured: one training-like step per case, ``loss(pred, target).backward()`` with ``pred``
a leaf that requires grad and ``target`` a plain tensor (the same two tensors for every case),
default batch 4x3x128x128, in one process.

Cases (all L1 + perceptual relu2_2,3_3,4_3,5_3 + style relu1_2,2_2,3_3,4_3 + LPIPS-vgg, weights 1):
- ``floor``: bare ``torchvision.models.vgg16(weights=None).features[:30]`` (to relu5_3), frozen,
  eval, input normalised ``(x - mean) / std``, pred with autograd, target under ``no_grad``, L1 of
  the last output, backward to pred: what any loss on relu5_3 has to run.
- ``combined``: ``perceptual_loss.CombinedLoss(l1=1, perceptual=..., style=..., lpips={"net": "vgg"})``;
  its three backbone terms share one extractor (one pred pass with autograd, one target pass without).
- ``combined-cached``: the same criterion after ``set_target(target)``: only pred runs.
- ``separate``: this library's modules summed, ``L1 + PerceptualLoss + StyleLoss + LPIPSLoss(net="vgg")``,
  each running its own backbone.
- ``peers`` (when ``lpips`` and ``piq`` import): ``L1 + lpips.LPIPS(net="vgg")`` (fed ``2x - 1``)
  ``+ piq.ContentLoss + piq.StyleLoss`` (vgg16, the same layers, layer weights 1). piq builds
  ``torchvision.models.vgg16(pretrained=True)``, which reads the torch hub cache: the script points
  ``$TORCH_HOME`` at a temporary cache holding a random ``vgg16(weights=None)`` state dict under
  torchvision's file name (no download).

All weights are random (``weights=None``, ``pnet_rand=True``, the random hub file): speed and
memory do not depend on weight values. LPIPS' linear heads are the files the ``lpips`` package ships.

Time: 2 warm-up steps, then the median of ``--iters`` steps, cases interleaved round-robin in a
freshly shuffled order each iteration (see ``bench/bench_losses.py`` and ``bench/_common.py``).
Peak memory: after the timing, one more step per case; the peak of tensor memory allocated during
the step above what was allocated before it (CPU: ``torch.profiler`` allocation events; CUDA:
``torch.cuda.max_memory_allocated``). Ratios are case / floor. The issue's targets: ``combined``
at most about 1.3x the floor; the separate peers are about 3.5x.

The header reports the 1-minute load average before and after: on a busy machine rerun it, or
with more ``--iters``.

Run (about 5 minutes on 2 busy CPU cores with the defaults, less when idle)::

    python bench/bench_criterion.py
    python bench/bench_criterion.py --device cuda --batch 16 --size 256 --out bench/criterion.md
    python bench/bench_criterion.py --cases combined,combined-cached --iters 5
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import (
    MEASUREMENT_NOTE,
    Floor,
    Inputs,
    Step,
    add_step_arguments,
    emit_report,
    floor_step,
    peak_mb,
    random_torch_home,
    step_header,
    time_steps,
)
from torch import Tensor, nn

from perceptual_loss import CombinedLoss, LPIPSLoss, MissingWeightsError, PerceptualLoss, StyleLoss

PERCEPTUAL_LAYERS = ("relu2_2", "relu3_3", "relu4_3", "relu5_3")
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
FLOOR = Floor("vgg16", 29)
LABELS = {
    "floor": f"floor: bare {FLOOR.key} (to relu5_3)",
    "combined": "CombinedLoss l1 + perceptual + style + lpips-vgg",
    "combined-cached": "CombinedLoss, target cached (set_target)",
    "separate": "L1 + PerceptualLoss + StyleLoss + LPIPSLoss (separate)",
    "peers": "peers: L1 + lpips.LPIPS + piq.ContentLoss + piq.StyleLoss",
}
SKIPPABLE = (ImportError, MissingWeightsError)
"""Errors that mean "this case cannot run here" (a peer or lpips' head files missing)."""


def build_combined() -> CombinedLoss:
    return CombinedLoss(
        l1=1.0,
        perceptual={"layers": list(PERCEPTUAL_LAYERS), "weight": 1.0},
        style={"layers": list(STYLE_LAYERS), "weight": 1.0},
        lpips={"net": "vgg", "weight": 1.0},
        weights=None,
    )


def combined_step(inputs: Inputs, device: torch.device, cached: bool) -> Step:
    """``criterion(pred, target).total.backward()``; with ``cached``, ``set_target`` first."""
    criterion = build_combined().to(device)
    if cached:
        criterion.set_target(inputs.target)

    def step() -> None:
        output = criterion(inputs.pred) if cached else criterion(inputs.pred, inputs.target)
        output.total.backward()
        inputs.clear_grads()

    return step


Term = Callable[[Inputs], Tensor]


def summed_step(terms: list[Term], modules: list[nn.Module], inputs: Inputs) -> Step:
    """Backward through the sum of ``terms`` (each ``.mean()``-reduced), then free every gradient."""

    def step() -> None:
        torch.stack([term(inputs).mean() for term in terms]).sum().backward()
        inputs.clear_grads()
        for module in modules:
            module.zero_grad(set_to_none=True)

    return step


def l1_term(inputs: Inputs) -> Tensor:
    return F.l1_loss(inputs.pred, inputs.target)


def module_term(module: nn.Module, signed: bool = False) -> Term:
    """``module(pred, target)``, on the images mapped to ``[-1, 1]`` when ``signed``."""
    if signed:
        return lambda inputs: module(inputs.pred_signed, inputs.target_signed)
    return lambda inputs: module(inputs.pred, inputs.target)


def separate_step(inputs: Inputs, device: torch.device) -> Step:
    """This library's single-term modules, each with its own backbone."""
    modules: list[nn.Module] = [
        PerceptualLoss(list(PERCEPTUAL_LAYERS), weights=None).to(device),
        StyleLoss(list(STYLE_LAYERS), weights=None).to(device),
        LPIPSLoss(net="vgg", weights=None).to(device),
    ]
    terms = [l1_term, *(module_term(module) for module in modules)]
    return summed_step(terms, modules, inputs)


def peers_step(inputs: Inputs, device: torch.device) -> Step:
    """``lpips.LPIPS`` (on ``[-1, 1]``) + piq's content and style losses; needs a vgg16 hub file."""
    import lpips  # optional peers: a missing package skips the row
    import piq

    with warnings.catch_warnings():  # lpips and piq build VGG16 with torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore")
        peer_lpips = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).to(device)
        content = piq.ContentLoss(feature_extractor="vgg16", layers=PERCEPTUAL_LAYERS, weights=[1.0] * 4).to(device)
        style = piq.StyleLoss(feature_extractor="vgg16", layers=STYLE_LAYERS, weights=[1.0] * 4).to(device)
    terms = [l1_term, module_term(peer_lpips, signed=True), module_term(content), module_term(style)]
    return summed_step(terms, [peer_lpips, content, style], inputs)


BUILDERS: dict[str, Callable[[Inputs, torch.device], Step]] = {
    "floor": lambda inputs, device: floor_step(FLOOR, inputs, device),
    "combined": lambda inputs, device: combined_step(inputs, device, cached=False),
    "combined-cached": lambda inputs, device: combined_step(inputs, device, cached=True),
    "separate": separate_step,
    "peers": peers_step,
}


def format_table(keys: list[str], ms: dict[str, float], mb: dict[str, float]) -> str:
    lines = [
        "| case | ms | ratio to floor | peak MB | ratio to floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in keys:
        lines.append(
            f"| {LABELS[key]} | {ms[key]:.1f} | {ms[key] / ms['floor']:.2f} "
            f"| {mb[key]:.1f} | {mb[key] / mb['floor']:.2f} |"
        )
    return "\n".join(lines)


NOTES = (
    "All weights random (weights=None; lpips pnet_rand=True; piq reads a random vgg16 file from a temporary "
    "TORCH_HOME): speed and memory do not depend on weight values.\n"
    "Every case: L1 + perceptual relu2_2,3_3,4_3,5_3 (L1 / piq: MSE) + style relu1_2,2_2,3_3,4_3 (Gram) "
    "+ LPIPS-vgg v0.1, weights 1; pred requires grad, target plain.\n"
    "floor: vgg16(weights=None).features[:30], frozen, (x-mean)/std, pred with autograd, target under no_grad, "
    "L1 of the last output, backward to pred.\n"
    + MEASUREMENT_NOTE
    + "\nIssue targets: combined <= ~1.3x the floor; separate peers ~3.5x."
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    others = [key for key in BUILDERS if key != "floor"]
    parser.add_argument(
        "--cases", default=",".join(others), help="comma list of: " + ", ".join(others) + " (the floor always runs)"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.cases = [key.strip() for key in args.cases.split(",") if key.strip()]
    unknown = [key for key in args.cases if key not in others]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(others)}")
    return args


def build_steps(keys: list[str], inputs: Inputs, device: torch.device) -> tuple[dict[str, Step], list[str]]:
    """The step of each case that can run here, and a note per skipped one."""
    steps: dict[str, Step] = {}
    skipped: list[str] = []
    for key in keys:
        try:
            steps[key] = BUILDERS[key](inputs, device)
        except SKIPPABLE as error:
            skipped.append(f"{key} ({type(error).__name__}: {error})")
    return steps, skipped


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    inputs = Inputs.random((args.batch, 3, args.size, args.size), device)
    keys = ["floor", *args.cases]
    with ExitStack() as stack:
        if "peers" in keys:
            stack.enter_context(random_torch_home(["vgg16"]))
        steps, skipped = build_steps(keys, inputs, device)
    ms = time_steps(steps, args.iters, device)
    mb = peak_mb(steps, device)

    emit_report([step_header(args, device, load_before), format_table(list(steps), ms, mb), NOTES], skipped, args.out)


if __name__ == "__main__":
    main()
