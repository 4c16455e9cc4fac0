"""Speed and memory of ``DISTSLoss`` against the bare L2-pool VGG16 and the two peers.

What is measured: one training-like step per case, with ``pred`` a leaf that requires grad and
``target`` a plain tensor (the same two tensors for every case), default 4 x 3 x 256 x 256:

- ours: ``DISTSLoss(weights=<the random VGG16 file>, check_inputs=False)``,
  ``loss(pred, target).backward()``;
- peer ``DISTS_pytorch.DISTS()`` as shipped, ``dists(pred, target, require_grad=True,
  batch_average=True).backward()`` (the only way it gives gradients: it then runs the target with
  autograd too, and its alpha/beta are parameters that require grad);
- peer ``piq.DISTS()`` (``reduction="mean"``) as shipped, ``dists(pred, target).backward()``
  (it runs the whole of VGG16's ``features``, one L2-pool past relu5_3, and resizes only images
  whose short side is over 256);
- the floor: the bare L2-pool VGG16 that any DISTS has to run, ``torchvision.models.vgg16(
  weights=None).features[:30]`` with the max-pools at 4, 9, 16, 23 replaced by a plain-torch
  L2-pool written as ``DISTS_pytorch.L2pooling`` writes it (``sqrt(conv(x**2, hann3x3, stride 2,
  padding 1, depthwise) + 1e-12)``), frozen, eval, input normalised ``(x - mean) / std``, pred with
  autograd, target under ``torch.no_grad()``, L1 of the relu5_3 outputs, backward to pred. It runs
  twice: in torchvision's default layout (NCHW) and with weights and input in
  ``torch.channels_last`` (CL, what the library does on CPU and CUDA). Ratios are against the
  faster (smaller) of the two.

Weights: every case reads the same randomly initialised VGG16 (``_common.random_torch_home``
writes ``vgg16-397923af.pth`` to a temporary ``$TORCH_HOME``; both peers load it through
torchvision's ``pretrained=True``; ours through ``weights=<that file>``; the floor builds the
same weights from the same seed). ``DISTS_pytorch`` reads its alpha/beta from
``sys.prefix/weights.pt`` (installed there by its wheel). ``piq.DISTS`` downloads its alpha/beta
with ``torch.hub.load_state_dict_from_url(".../v0.4.1/dists_weights.pt")``, which reads
``$TORCH_HOME/hub/checkpoints/dists_weights.pt`` without any download when that file exists (no
hash check): the script writes there ``{"alpha": alpha / s, "beta": beta / s}`` from
``DISTS_pytorch``'s ``weights.pt`` (``s`` = the sum of both; piq does not divide by it, the
reference does), so all three compute the same DISTS; the report's last line gives their values
on the benchmark's pair (equal at 256 and below; piq resizes larger images).

Time and memory as in ``bench_losses.py``: 2 warm-up steps, then the median of ``--iters``
steps, all cases interleaved round-robin in a shuffled order (``_common.time_steps``); then one
more step each for the peak tensor memory (``_common.peak_mb``).

Run (2-3 minutes on 2 idle CPU cores with ``--iters 5``; the peers cost most of it)::

    python bench/bench_dists.py --iters 5
    python bench/bench_dists.py --device cuda --batch 16 --out /tmp/dists.md
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from _common import (
    MEASUREMENT_NOTE,
    Inputs,
    Step,
    add_step_arguments,
    emit_report,
    peak_mb,
    random_torch_home,
    step_header,
    time_steps,
)
from torch import Tensor, nn

from perceptual_loss import DISTSLoss
from perceptual_loss.backbones import IMAGENET_MEAN, IMAGENET_STD
from perceptual_loss.weights import dists_weights_path, imagenet_weights_path

L2_POOLS = (4, 9, 16, 23)
"""Indices in VGG16's ``features`` of the max-pools DISTS replaces by L2-pools."""
PIQ_DISTS_FILE = "dists_weights.pt"
"""The file name ``piq.DISTS`` asks ``torch.hub.load_state_dict_from_url`` for."""
FLOOR, FLOOR_CL, OURS, PEER_REF, PEER_PIQ = "floor", "floor CL", "ours", "peer DISTS_pytorch", "peer piq"
SKIPPABLE = (ImportError, OSError, RuntimeError, KeyError)
"""A peer that cannot run here (not installed, a weights file missing or unreadable): its row is skipped."""
LABELS = {
    FLOOR: "floor: L2-pool VGG16 [:30], NCHW",
    FLOOR_CL: "floor: L2-pool VGG16 [:30], channels_last",
    OURS: "ours: DISTSLoss(check_inputs=False)",
    PEER_REF: "peer: DISTS_pytorch.DISTS (require_grad=True)",
    PEER_PIQ: "peer: piq.DISTS 0.8.0",
}


class PlainL2Pool(nn.Module):
    """``DISTS_pytorch.L2pooling`` (filter_size 5 -> a 3x3 Hann window), in plain torch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([0.5, 1.0, 0.5])
        window = taps[:, None] * taps[None, :]
        self.register_buffer("filter", (window / window.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def floor_step(inputs: Inputs, device: torch.device, channels_last: bool) -> Step:
    """The bare L2-pool VGG16 to relu5_3: plain normalisation, L1 of relu5_3, backward to pred."""
    torch.manual_seed(0)  # the same weights as random_torch_home's file (same seed, same constructor)
    net = torchvision.models.vgg16(weights=None).features[:30]
    for index in L2_POOLS:
        net[index] = PlainL2Pool(net[index - 2].out_channels)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=layout).eval().requires_grad_(False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def run(images: Tensor) -> Tensor:
        return net(((images - mean) / std).contiguous(memory_format=layout))

    def step() -> None:
        out = run(inputs.pred)
        with torch.no_grad():
            ref = run(inputs.target)
        (out - ref).abs().mean().backward()
        inputs.clear_grads()

    return step


def write_piq_weights(home: Path) -> Path:
    """``$TORCH_HOME/hub/checkpoints/dists_weights.pt`` for piq: DISTS_pytorch's alpha/beta, divided
    by their sum (what the reference does in forward and piq expects already done in the file)."""
    state = torch.load(dists_weights_path(), map_location="cpu")
    total = state["alpha"].sum() + state["beta"].sum()
    path = Path(torch.hub.get_dir()) / "checkpoints" / PIQ_DISTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"alpha": state["alpha"] / total, "beta": state["beta"] / total}, path)
    return path


def _quiet(build: Callable[[], nn.Module]) -> nn.Module:
    with warnings.catch_warnings():  # both peers use torchvision's deprecated `pretrained=True`
        warnings.simplefilter("ignore")
        return build()


def build_cases(
    inputs: Inputs, device: torch.device
) -> tuple[dict[str, Step], dict[str, Callable[[], Tensor]], list[str]]:
    """The steps to time, a no-grad value of each DISTS on the pair, and the peers that could not run."""
    pred, target = inputs.pred, inputs.target
    ours = DISTSLoss(weights=imagenet_weights_path("vgg16"), check_inputs=False).to(device)
    steps: dict[str, Step] = {
        FLOOR: floor_step(inputs, device, False),
        FLOOR_CL: floor_step(inputs, device, True),
    }
    values: dict[str, Callable[[], Tensor]] = {OURS: lambda: ours(pred, target)}

    def ours_step() -> None:
        ours(pred, target).backward()
        inputs.clear_grads()

    steps[OURS] = ours_step
    skipped: list[str] = []
    try:
        import DISTS_pytorch

        reference = _quiet(DISTS_pytorch.DISTS).to(device)

        def reference_step() -> None:
            reference(pred, target, require_grad=True, batch_average=True).backward()
            inputs.clear_grads()
            reference.zero_grad(set_to_none=True)  # its alpha/beta require grad

        steps[PEER_REF] = reference_step
        values[PEER_REF] = lambda: reference(pred, target, batch_average=True)
    except SKIPPABLE as error:  # an optional peer: report and go on
        skipped.append(f"{PEER_REF} ({type(error).__name__}: {error})")
    try:
        import piq

        write_piq_weights(Path(os.environ["TORCH_HOME"]))
        metric = _quiet(lambda: piq.DISTS(reduction="mean")).to(device)

        def piq_step() -> None:
            metric(pred, target).backward()
            inputs.clear_grads()

        steps[PEER_PIQ] = piq_step
        values[PEER_PIQ] = lambda: metric(pred, target)
    except SKIPPABLE as error:
        skipped.append(f"{PEER_PIQ} ({type(error).__name__}: {error})")
    return steps, values, skipped


def format_table(ms: dict[str, float], mb: dict[str, float]) -> str:
    """case | ms | time / floor | peak MB | memory / floor | ours / case (time, memory)."""
    best_ms, best_mb = min(ms[FLOOR], ms[FLOOR_CL]), min(mb[FLOOR], mb[FLOOR_CL])
    lines = [
        "| case | ms | time / floor | peak MB | memory / floor | ours / this: time | ours / this: memory |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, time_ms in ms.items():
        lines.append(
            f"| {LABELS[key]} | {time_ms:.1f} | {time_ms / best_ms:.2f} | {mb[key]:.1f} | {mb[key] / best_mb:.2f} "
            f"| {ms[OURS] / time_ms:.2f} | {mb[OURS] / mb[key]:.2f} |"
        )
    return "\n".join(lines)


def verdict(ms: dict[str, float], mb: dict[str, float]) -> str:
    """The issue's targets: ours within 1.1x the faster floor's time, and less memory than either peer."""
    time_ratio = ms[OURS] / min(ms[FLOOR], ms[FLOOR_CL])
    peers = [key for key in (PEER_REF, PEER_PIQ) if key in mb]
    lines = [f"target time <= 1.10x floor: {time_ratio:.2f}x, {'met' if time_ratio <= 1.1 else 'MISSED'}"]
    if peers:
        smaller = all(mb[OURS] < mb[key] for key in peers)
        lines.append(
            "target memory < every peer: "
            + ", ".join(f"{mb[OURS]:.0f} vs {mb[key]:.0f} MB ({key})" for key in peers)
            + f", {'met' if smaller else 'MISSED'}"
        )
    return "\n".join(lines)


NOTES = (
    "ours: DISTSLoss(weights=<random vgg16 file>, check_inputs=False) (trunk channels_last on CPU/CUDA, "
    "custom-backward L2-pool and moments).\n"
    "peer DISTS_pytorch.DISTS: as shipped, require_grad=True, batch_average=True (runs the target with "
    "autograd; alpha/beta require grad). peer piq.DISTS: as shipped (runs VGG16 features[:31], one L2-pool "
    "past relu5_3), alpha/beta = DISTS_pytorch's weights.pt divided by their sum, written to "
    f"$TORCH_HOME/hub/checkpoints/{PIQ_DISTS_FILE} where torch.hub finds it without downloading.\n"
    "floor: torchvision vgg16(weights=None).features[:30], pools 4/9/16/23 -> plain L2-pool (as DISTS_pytorch), "
    "frozen, (x-mean)/std, pred with autograd, target under no_grad, L1 of relu5_3, backward to pred; NCHW and "
    "channels_last (CL). Ratios to the floor: against the faster (smaller) of the two.\n"
    "All cases read the same random VGG16 weights.\n" + MEASUREMENT_NOTE
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.set_defaults(size=256)
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    device = torch.device(args.device)
    inputs = Inputs.random((args.batch, 3, args.size, args.size), device)
    with random_torch_home(["vgg16"]):
        steps, values, skipped = build_cases(inputs, device)
    with torch.no_grad():
        value_line = "DISTS on the pair (no grad): " + ", ".join(f"{k} {float(v()):.6f}" for k, v in values.items())

    ms = time_steps(steps, args.iters, device)
    mb = peak_mb(steps, device)
    sections = [step_header(args, device, load_before), format_table(ms, mb), verdict(ms, mb), NOTES, value_line]
    emit_report(sections, skipped, args.out)


if __name__ == "__main__":
    main()
