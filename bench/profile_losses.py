"""Where a loss step's time goes: kernels, launches and host time, against its bare-backbone floor.

For each case of ``bench_losses.py`` (same losses, same floors, same inputs) this runs 3 warm-up
steps, then profiles ``--steps`` steps with ``torch.profiler`` and reports per step:

- wall ms (synchronised, measured outside the profiler, median of ``--steps``);
- device ms: the summed duration of the device kernels (CUDA only; on CPU the column is empty);
- kernels: device kernel launches per step;
- then the top ``--top`` operators by self device time (CUDA) or self CPU time (CPU).

On a GPU, wall ms well above device ms means the step is bound by the host (Python and dispatch
per operator, or a host sync), not by the kernels: fewer, larger operators help there, not faster
kernels.

Run::

    python bench/profile_losses.py --device cuda --batch 16 --size 256 --cases lpips-alex,style-vgg16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import Inputs, Step, add_step_arguments, describe_device, floor_step, synchronize
from bench_losses import CASE_BY_KEY, CASES, SKIPPABLE, loss_step
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

WARMUP = 3


def _device_time(event: object) -> float:
    """Self device time (µs) of a profiler event, across torch versions' attribute names."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_step(step: Step, device: torch.device, steps: int, top: int) -> str:
    for _ in range(WARMUP):
        step()
    wall = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        wall.append(1000 * (time.perf_counter() - start))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    kernel_ms = sum(getattr(e, "device_time", getattr(e, "cuda_time", 0.0)) for e in kernels) / 1000 / steps
    line = f"wall {statistics.median(wall):.2f} ms/step"
    if device.type == "cuda":
        line += f", device {kernel_ms:.2f} ms/step, {len(kernels) / steps:.0f} kernels/step"
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=top, max_name_column_width=60)
    return f"{line}\n\n```\n{table}\n```"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument(
        "--cases", default="lpips-alex,style-vgg16", help=f"comma list of: {', '.join(c.key for c in CASES)}"
    )
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per case (default 5)")
    parser.add_argument("--top", type=int, default=15, help="operators listed per case (default 15)")
    args = parser.parse_args()
    device = torch.device(args.device)
    inputs = Inputs.random((args.batch, 3, args.size, args.size), device)
    print(f"{describe_device(device)}, batch {args.batch}x3x{args.size}x{args.size}")
    for key in args.cases.split(","):
        case = CASE_BY_KEY[key]
        try:
            step, _ = loss_step(case, inputs, device)
        except SKIPPABLE as error:
            print(f"\n## {case.label}: skipped ({type(error).__name__}: {error})")
            continue
        print(f"\n## floor {case.floor.arch}[:{case.floor.last + 1}]\n")
        print(profile_step(floor_step(case.floor, inputs, device), device, args.steps, args.top))
        print(f"\n## {case.label}\n")
        print(profile_step(step, device, args.steps, args.top))


if __name__ == "__main__":
    main()
