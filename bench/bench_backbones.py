"""Speed and memory of ``PerceptualLoss`` on the fx-traced backbones against the bare torchvision model.

What is measured: one training-like step per case, ``loss(pred, target).backward()`` with ``pred``
a leaf that requires grad and ``target`` a plain tensor, for ``PerceptualLoss(taps,
backbone=name, weights=None, check_inputs=False)`` on backbones that run as a traced graph
(ResNet, ConvNeXt, EfficientNet, ViT, RegNet, MobileNetV3, Swin).

The floor ("bare") of a case is the same torchvision model that any loss on those taps has to run:
``torchvision.models.get_model(name, weights=None)``, frozen and in eval mode, truncated at the
deepest tap with ``torchvision.models.feature_extraction.create_feature_extractor`` (the whole
model for ``logits``), input normalised the plain way ``(x - mean) / std``, pred with autograd,
target under ``torch.no_grad()``, the case's distance (L1; L2 for MaskBit's logits; MONAI's
channel-normalised L2 written as MONAI writes it) of the deepest tap only, backward to pred.
The loss loads the bare model's (random) weights, so both run on the same numbers. Each bare
model runs twice: in torchvision's default layout, and with its weights and input in
``torch.channels_last`` ("CL", what the library does on CPU and CUDA); the ratios are ours / the
faster (or smaller) of the two, so they isolate what the loss adds.

On a shared 2-core VM single runs vary by 5-10% (other tenants; the header gives the load
average): rerun a case that misses the time target with more ``--iters`` before reading into it.

Time: each case's three steps (bare, bare CL, ours) are interleaved round-robin in a shuffled
order (``_common.time_steps``): 2 warm-up steps, then the median of ``--iters``. Cases are timed
one after another, not interleaved with each other (each case has its own inputs). Peak memory:
one more step each, as in ``bench_losses.py`` (``_common.peak_mb``).

Input: ``--batch`` x 3 x ``--size`` x ``--size`` (default 4 x 128 x 128), except the cases that
take 224 x 224 images (ViT; ConvNeXt logits with ``resize=224``, MaskBit's recipe), which run
at 224 with half the batch. "MB target kept" is what the loss holds of the target's taps through
the step; the bare step keeps nothing of the target but its deepest tap's output.

Run (2-3 minutes on 2 idle CPU cores with ``--iters 7``)::

    python bench/bench_backbones.py --iters 5
    python bench/bench_backbones.py --cases resnet50,efficientnet_b0 --iters 10 --out /tmp/backbones.md
"""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from _common import (
    MEASUREMENT_NOTE,
    WARMUP,
    Inputs,
    Step,
    add_step_arguments,
    describe_device,
    emit_report,
    parse_with_cases,
    peak_mb,
    time_steps,
)
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from perceptual_loss import PerceptualLoss
from perceptual_loss.backbones import IMAGENET_MEAN, IMAGENET_STD, available_taps

LOGITS = "logits"


@dataclass(frozen=True)
class Case:
    """``PerceptualLoss(taps, backbone=backbone, **options)``; ``size`` fixes the input size (else ``--size``)."""

    key: str
    backbone: str
    taps: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    size: int | None = None

    @property
    def distance(self) -> str:
        return str(self.options.get("distance", "l1"))

    @property
    def deepest(self) -> str:
        """The tap the bare model is cut at: the last of ``taps`` in network order."""
        order = available_taps(self.backbone)

        def position(tap: str) -> int:  # a module name (``layer2``) stands for the last node under it
            return max(i for i, name in enumerate(order) if name == tap or name.startswith(tap + "."))

        return max(self.taps, key=position)

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"{self.backbone} {','.join(self.taps)}{extra}"


CASES: tuple[Case, ...] = (
    Case("resnet50", "resnet50", ("layer1", "layer2", "layer3", "layer4")),
    Case("convnext_tiny", "convnext_tiny", ("features.1", "features.3", "features.5", "features.7")),
    Case("convnext_small-logits", "convnext_small", (LOGITS,), {"distance": "l2", "resize": 224}, size=224),
    Case("efficientnet_b0", "efficientnet_b0", ("features.2", "features.4", "features.6")),
    Case("vit_b_16", "vit_b_16", ("encoder.layers.encoder_layer_5",), size=224),
    Case("resnet50-monai", "resnet50", ("layer4.2.relu_2",), {"distance": "normalized_l2"}),
    Case("regnet_y_400mf", "regnet_y_400mf", ("trunk_output",)),
    Case("mobilenet_v3_large", "mobilenet_v3_large", ("features.12",)),
    Case("swin_t", "swin_t", ("features.5",)),
)
CASE_BY_KEY = {case.key: case for case in CASES}


def bare_model(case: Case) -> tuple[nn.Module, Callable[[Any], Tensor]]:
    """torchvision's model (random weights, frozen, eval) cut at the deepest tap, and its output getter."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(case.backbone, weights=None).eval().requires_grad_(False)
    if case.deepest == LOGITS:
        return model, lambda out: out
    node = case.deepest
    trunk = create_feature_extractor(model, [node]).eval().requires_grad_(False)
    return trunk, lambda out: out[node]


def _distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """The case's distance written plainly; ``normalized_l2`` as MONAI's ``PerceptualLoss`` writes it."""
    if distance == "l1":
        return (a - b).abs().mean()
    if distance == "l2":
        return (a - b).square().mean()
    if distance == "normalized_l2":  # monai.losses.perceptual: normalize_tensor, then spatial_average
        a, b = (x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10) for x in (a, b))
        return (a - b).square().sum(dim=1, keepdim=True).mean()
    raise ValueError(distance)


def bare_step(case: Case, inputs: Inputs, channels_last: bool) -> Step:
    """The bare truncated model: plain normalisation, distance of the deepest tap, backward to pred."""
    net, output = bare_model(case)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(inputs.pred.device)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(inputs.pred.device)
    net = net.to(inputs.pred.device)

    def run(images: Tensor) -> Tensor:
        return output(net(((images - mean) / std).contiguous(memory_format=layout)))

    def step() -> None:
        out = run(inputs.pred)
        with torch.no_grad():
            ref = run(inputs.target)
        _distance(out, ref, case.distance).backward()
        inputs.clear_grads()

    return step


def build_loss(case: Case, device: torch.device) -> PerceptualLoss:
    """Our loss, with the bare model's random weights loaded into its kept layers."""
    loss = PerceptualLoss(list(case.taps), backbone=case.backbone, weights=None, check_inputs=False, **case.options)
    torch.manual_seed(0)
    state = torchvision.models.get_model(case.backbone, weights=None).state_dict()
    layers = loss.extractor.layers
    layers.load_state_dict({key: state[key] for key in layers.state_dict()}, strict=True)
    return loss.to(device)


def loss_step(case: Case, inputs: Inputs, device: torch.device) -> tuple[Step, float]:
    """``loss(pred, target).backward()``, and the MB of target taps the loss keeps through the step."""
    loss = build_loss(case, device)
    with torch.no_grad():
        kept = sum(t.numel() * t.element_size() for t in loss.target_features(inputs.target).values()) / 2**20

    def step() -> None:
        loss(inputs.pred, inputs.target).backward()
        inputs.clear_grads()

    return step, kept


@dataclass
class Row:
    case: Case
    shape: tuple[int, ...]
    ms: dict[str, float]
    mb: dict[str, float]
    kept: float


def measure(case: Case, batch: int, size: int, iters: int, device: torch.device) -> Row:
    """Time and peak memory of the bare model (NCHW, CL) and the loss, interleaved."""
    if case.size is not None:
        batch, size = max(1, batch // 2), case.size
    shape = (batch, 3, size, size)
    inputs = Inputs.random(shape, device)
    ours, kept = loss_step(case, inputs, device)
    steps = {"bare": bare_step(case, inputs, False), "bare CL": bare_step(case, inputs, True), "ours": ours}
    ms = time_steps(steps, iters, device)
    mb = peak_mb(steps, device)
    row = Row(case, shape, ms, mb, kept)
    del steps, ours, inputs
    gc.collect()
    return row


def format_table(rows: list[Row]) -> str:
    """case | bare ms | ours ms | time ratio | bare MB | ours MB | memory ratio (against the better bare)."""
    lines = [
        "| case | input | bare ms (NCHW / CL) | ours ms | time ratio | bare MB (NCHW / CL) | ours MB | memory ratio "
        "| MB target kept |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ms, mb = row.ms, row.mb
        best_ms, best_mb = min(ms["bare"], ms["bare CL"]), min(mb["bare"], mb["bare CL"])
        time_mark = "" if ms["ours"] / best_ms <= 1.1 else " **"
        mem_mark = "" if mb["ours"] / best_mb <= 1.0 else " **"
        lines.append(
            f"| {row.case.label} | {'x'.join(map(str, row.shape))} | {ms['bare']:.1f} / {ms['bare CL']:.1f} "
            f"| {ms['ours']:.1f} | {ms['ours'] / best_ms:.2f}{time_mark} | {mb['bare']:.1f} / {mb['bare CL']:.1f} "
            f"| {mb['ours']:.1f} | {mb['ours'] / best_mb:.2f}{mem_mark} | {row.kept:.1f} |"
        )
    return "\n".join(lines)


NOTES = (
    "ours: PerceptualLoss(taps, backbone=..., weights=None, check_inputs=False), with the bare model's random "
    "weights loaded.\n"
    "bare: torchvision.models.get_model(name, weights=None), frozen, eval, cut at the deepest tap by "
    "create_feature_extractor (whole model for logits), (x-mean)/std, pred with autograd, target under no_grad, "
    "the case's distance of the deepest tap only, backward to pred; in torchvision's layout (NCHW) and with "
    "weights and input channels_last (CL).\n"
    "Ratios: ours / the faster (smaller) of NCHW and CL. ** marks a miss of the targets (time <= 1.1, memory <= 1.0).\n"
    "MB target kept: the target taps the loss holds until backward (all taps, not only the deepest).\n"
    + MEASUREMENT_NOTE
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    return parse_with_cases(parser, CASE_BY_KEY, CASE_BY_KEY)


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    rows = []
    for key in args.cases:
        rows.append(measure(CASE_BY_KEY[key], args.batch, args.size, args.iters, device))
        print(f"done {key}", flush=True)
    header = (
        f"{describe_device(device)}, median of {args.iters} forward+backward steps after {WARMUP} warm-up, "
        f"1-min load average {load_before:.2f} before and {os.getloadavg()[0]:.2f} after the run"
    )
    emit_report([header, format_table(rows), NOTES], [], args.out)


if __name__ == "__main__":
    main()
