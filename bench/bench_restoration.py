"""Speed and memory of SSIM, MS-SSIM, focal frequency and FFT losses against their references (issue 27).

What is measured: one training-like step per case, ``loss(pred, target).backward()`` with
``pred`` a leaf that requires grad, default 16 x 3 x 256 x 256 in ``[0, 1]``:

- ``SSIMLoss()`` against ``1 - pytorch_msssim.ssim(pred, target, data_range=1.0)``;
- ``MSSSIMLoss()`` against ``1 - pytorch_msssim.ms_ssim(pred, target, data_range=1.0)``;
- ``FocalFrequencyLoss()`` against ``focal_frequency_loss.FocalFrequencyLoss()``;
- ``FFTLoss()`` (no reference package: MIMO-UNet's and NAFNet's code is the same two lines).

Every pair computes the same value (printed). Time: 2 warm-up steps, then the median of
``--iters`` steps, all cases interleaved round-robin in a shuffled order
(``_common.time_steps``); then one step each for the peak tensor memory (``_common.peak_mb``).

Run (about a minute on 2 idle CPU cores)::

    python bench/bench_restoration.py
    python bench/bench_restoration.py --batch 4 --size 512 --iters 5
"""

from __future__ import annotations

import argparse

import focal_frequency_loss
import pytorch_msssim
import torch
from _common import Step, describe_device, peak_mb, time_steps

from perceptual_loss import FFTLoss, FocalFrequencyLoss, MSSSIMLoss, SSIMLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    pred = torch.rand(shape, generator=generator).to(device).requires_grad_()
    target = torch.rand(shape, generator=generator).to(device)

    cases = {
        "ssim (ours)": SSIMLoss(check_inputs=False),
        "ssim (pytorch-msssim)": lambda p, t: 1 - pytorch_msssim.ssim(p, t, data_range=1.0),
        "ms_ssim (ours)": MSSSIMLoss(check_inputs=False),
        "ms_ssim (pytorch-msssim)": lambda p, t: 1 - pytorch_msssim.ms_ssim(p, t, data_range=1.0),
        "focal_frequency (ours)": FocalFrequencyLoss(),
        "focal_frequency (focal-frequency-loss)": focal_frequency_loss.FocalFrequencyLoss(),
        "fft (ours)": FFTLoss(),
    }

    def step_of(loss: object) -> Step:
        def step() -> None:
            loss(pred, target).backward()  # type: ignore[operator]
            pred.grad = None

        return step

    steps = {name: step_of(loss) for name, loss in cases.items()}
    times = time_steps(steps, args.iters, device)
    peaks = peak_mb(steps, device)
    with torch.no_grad():
        values = {name: float(loss(pred, target)) for name, loss in cases.items()}  # type: ignore[operator]
    print(f"{describe_device(device)}, {args.batch}x3x{args.size}x{args.size}, fwd+bwd, median of {args.iters}")
    print()
    print("| case | ms | vs reference | peak MB | value |")
    print("|---|---:|---|---:|---:|")
    for name in cases:
        family = name.split(" ")[0]
        reference = next((n for n in cases if n.startswith(family + " ") and "ours" not in n), None)
        ratio = f"{times[name] / times[reference]:.2f}x" if reference and "ours" in name else ""
        print(f"| {name} | {times[name]:.1f} | {ratio} | {peaks[name]:.0f} | {values[name]:.6f} |")


if __name__ == "__main__":
    main()
