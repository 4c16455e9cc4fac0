"""Peak memory and time of a loss step with and without ``chunk_size`` (issue 25), each in a fresh process.

What is measured: one process per case builds the loss (random weights) and a pred/target pair,
notes its resident memory (the baseline: torch, the trunk, the inputs), then runs ``--steps``
forward+backward steps ``loss(pred, target).backward()``. Reported: the peak resident memory of
the process (``ru_maxrss``), the same above the baseline (what the step itself needs), and the
median step time after the first. Cases run one after another, each alone on the machine.

Default case (issue 25): LPIPS-vgg on 32 x 3 x 256 x 256, unchunked and ``chunk_size=4``. With
``--tiles``, the cases are every chunk size with every tile size (0: off), and each case's value
and input gradient are compared with the first case's (relative to the largest gradient).

Run (a few minutes on 2 CPU cores)::

    python bench/bench_memory.py
    python bench/bench_memory.py --loss perceptual --batch 16 --size 128 --chunks 0,2,8
    python bench/bench_memory.py --loss perceptual --batch 1 --size 2048 --chunks 0 --tiles 0,512 --steps 2
    python bench/bench_memory.py --budgets 0,256MiB,512MiB,1GiB,2GiB     # the max_memory curve

With ``--budgets``, the cases are ``max_memory`` budgets (0: none) instead of chunks and tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

LOSSES = ("lpips-vgg", "lpips-alex", "perceptual", "dists")


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(
    loss_name: str, batch: int, size: int, chunk: int, tile: int, steps: int, grad_file: str, budget: str = ""
) -> dict[str, float]:
    import torch

    from perceptual_loss import DISTSLoss, LPIPSLoss, PerceptualLoss

    torch.manual_seed(0)  # the same random trunk in every process
    options = {"weights": None, "check_inputs": False, "chunk_size": chunk or None, "tile": tile or None}
    options["max_memory"] = budget or None
    if loss_name.startswith("lpips"):
        loss = LPIPSLoss(net=loss_name.split("-")[1], **options)
    elif loss_name == "dists":
        loss = DISTSLoss(**options)
    else:
        loss = PerceptualLoss(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], **options)
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(batch, 3, size, size, generator=generator).requires_grad_()
    target = torch.rand(batch, 3, size, size, generator=generator)
    baseline = _rss_mb()
    times = []
    for step in range(steps):
        start = time.perf_counter()
        value = loss(pred, target)
        value.backward()
        times.append(time.perf_counter() - start)
        if step == 0:
            torch.save({"value": value.detach(), "grad": pred.grad}, grad_file)
        pred.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    timed = times[1:] or times
    return {"baseline_mb": baseline, "peak_mb": peak, "ms": 1000 * statistics.median(timed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", default="lpips-vgg", choices=LOSSES)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunks", default="0,4", help="comma list of chunk sizes; 0 = unchunked")
    parser.add_argument("--tiles", default="0", help="comma list of tile sizes; 0 = untiled")
    parser.add_argument("--budgets", default="", help="comma list of max_memory budgets (e.g. 512MiB,1GiB); 0 = none")
    parser.add_argument("--steps", type=int, default=3, help="steps per case; the first is not timed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--grad-file", default="", help=argparse.SUPPRESS)
    parser.add_argument("--budget", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(args.loss, args.batch, args.size, args.chunk, args.tile, args.steps, args.grad_file, args.budget)
        print(json.dumps(result))
        return
    import torch

    rows = [
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores, threads {torch.get_num_threads()}, {args.loss}, "
        f"batch {args.batch}x3x{args.size}x{args.size}, {args.steps} fwd+bwd steps per fresh process "
        "(median time of all but the first), random weights",
        "",
        "| chunk_size | tile | max_memory | peak RSS MB | above baseline MB | ms per step | vs the first | value, gradient vs the first |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    first: dict[str, Any] | None = None
    folder = tempfile.mkdtemp(prefix="bench_memory_")
    cases = [(int(c), int(t), "") for c in args.chunks.split(",") for t in args.tiles.split(",")]
    if args.budgets:
        cases = [(0, 0, "" if b == "0" else b) for b in args.budgets.split(",")]
    for index, (chunk, tile, budget) in enumerate(cases):
        grad_file = os.path.join(folder, f"{index}.pt")
        command = [sys.executable, __file__, "--child", "--loss", args.loss, "--batch", str(args.batch)]
        command += ["--size", str(args.size), "--chunk", str(chunk), "--tile", str(tile), "--steps", str(args.steps)]
        command += ["--grad-file", grad_file, "--budget", budget]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        saved = torch.load(grad_file)
        above = result["peak_mb"] - result["baseline_mb"]
        ratio = agreement = ""
        if first is None:
            first = {**result, "above": above, **saved}
        else:
            ratio = (
                f"{result['peak_mb'] / first['peak_mb']:.2f}x peak, {above / first['above']:.2f}x above baseline, "
                f"{result['ms'] / first['ms']:.2f}x time"
            )
            value_error = ((saved["value"] - first["value"]).abs() / first["value"].abs()).max().item()
            grad_error = ((saved["grad"] - first["grad"]).abs().max() / first["grad"].abs().max()).item()
            agreement = f"{value_error:.1e} relative, {grad_error:.1e} of the largest"
        rows.append(
            f"| {chunk or 'None'} | {tile or 'None'} | {budget or 'None'} | {result['peak_mb']:.0f} | {above:.0f} | {result['ms']:.0f} | "
            f"{ratio} | {agreement} |"
        )
        os.remove(grad_file)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
