"""Volumes (issues 24 and 25): SlicedLoss against MONAI's 2.5-D PerceptualLoss and against slices stacked by hand.

Every case runs in a fresh process on one ``1 x 1 x S x S x S`` volume in ``[-1, 1]`` whose
prediction requires grad: it builds the loss, notes its resident memory (the baseline), runs
``--steps`` forward+backward steps and reports the peak resident memory (``ru_maxrss``) and the
median step time after the first. Every slice of all three axes is scored (ratio 1.0) with
LPIPS-squeeze, so every case computes the same value (compared with MONAI's).

Cases:

- ``monai``: ``monai.losses.PerceptualLoss(spatial_dims=3, network_type="squeeze",
  is_fake_3d=True, fake_3d_ratio=1.0)``: ``lpips.LPIPS`` on every slice;
- ``by_hand``: our ``LPIPSLoss`` on each axis's slices, permuted and stacked by hand, summed;
- ``sliced``: ``SlicedLoss(LPIPSLoss(net="squeeze", input_range=(-1, 1), grayscale="repeat"))``;
- ``sliced_chunk<k>``: the same with ``chunk_size=k`` on the LPIPS loss (k slices at a time,
  each chunk's gradient taken as it goes).

The trunk weights are random (torchvision's file names in a temporary hub cache, LPIPS' shipped
heads): mechanics and cost, not perception.

Run (about five minutes at 128 on 2 CPU cores)::

    python bench/bench_volumes.py --size 96
    python bench/bench_volumes.py --size 128 --chunks 32,64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import random_torch_home


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(case: str, size: int, steps: int) -> dict[str, float]:
    import torch

    from perceptual_loss import LPIPSLoss, SlicedLoss

    generator = torch.Generator().manual_seed(0)
    pred = (2 * torch.rand(1, 1, size, size, size, generator=generator) - 1).requires_grad_()
    target = 2 * torch.rand(1, 1, size, size, size, generator=generator) - 1
    if case == "monai":
        from monai.losses import PerceptualLoss as MonaiPerceptualLoss

        loss: Any = MonaiPerceptualLoss(spatial_dims=3, network_type="squeeze", is_fake_3d=True, fake_3d_ratio=1.0)
    else:
        chunk = int(case.removeprefix("sliced_chunk")) if case.startswith("sliced_chunk") else None
        lpips = LPIPSLoss(net="squeeze", input_range=(-1, 1), grayscale="repeat", check_inputs=False, chunk_size=chunk)
        if case == "by_hand":

            def loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                total = p.new_zeros(())
                for dim in (2, 3, 4):
                    rest = [d for d in (2, 3, 4) if d != dim]
                    order = (0, dim, 1, *rest)
                    shape = (-1, p.shape[1], p.shape[rest[0]], p.shape[rest[1]])
                    total = total + lpips(p.permute(order).reshape(shape), t.permute(order).reshape(shape))
                return total

        else:
            loss = SlicedLoss(lpips, dims=(2, 3, 4))
    baseline = _rss_mb()
    times, value = [], 0.0
    for _ in range(steps):
        start = time.perf_counter()
        result = loss(pred, target)
        result.backward()
        times.append(time.perf_counter() - start)
        value, pred.grad = float(result), None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"baseline_mb": baseline, "peak_mb": peak, "s": statistics.median(times[1:] or times), "value": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--chunks", default="32", help="comma list of chunk sizes for the chunked SlicedLoss cases")
    parser.add_argument("--steps", type=int, default=3, help="steps per case; the first is not timed")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.steps)))
        return
    import torch

    cases = ["monai", "by_hand", "sliced", *(f"sliced_chunk{c}" for c in args.chunks.split(",") if c)]
    rows = [
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores, LPIPS-squeeze on every slice of a 1x1x{args.size}^3 "
        f"volume, all three axes; {args.steps} fwd+bwd steps per fresh process (median of all but the first); random "
        "trunk weights",
        "",
        "| case | peak RSS MB | above baseline MB | s per step | vs monai (time, peak) | value - monai's |",
        "|---|---:|---:|---:|---|---:|",
    ]
    results: dict[str, dict[str, float]] = {}
    with random_torch_home(["squeezenet1_1"]):
        for case in cases:
            command = [sys.executable, __file__, "--child", case, "--size", str(args.size), "--steps", str(args.steps)]
            results[case] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    reference = results["monai"]
    for case, result in results.items():
        ratio = f"{result['s'] / reference['s']:.2f}x, {result['peak_mb'] / reference['peak_mb']:.2f}x"
        rows.append(
            f"| {case} | {result['peak_mb']:.0f} | {result['peak_mb'] - result['baseline_mb']:.0f} | {result['s']:.2f} | "
            f"{ratio} | {result['value'] - reference['value']:.1e} |"
        )
    by_hand, sliced = results["by_hand"], results["sliced"]
    rows += ["", f"SlicedLoss vs the slices stacked by hand: {sliced['s'] / by_hand['s']:.3f}x the time."]
    print("\n".join(rows))


if __name__ == "__main__":
    main()
