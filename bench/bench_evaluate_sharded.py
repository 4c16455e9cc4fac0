"""The folder evaluator on one process and sharded over several with ``torchrun``, end to end.

What is measured, on the same folders and the same random AlexNet file (through ``$TORCH_HOME``):

- ``python -m perceptual_loss eval DIR0 DIR1 --output single.csv``: one process with every core
  (PyTorch's default thread count);
- ``torchrun --standalone --nproc_per_node=N -m perceptual_loss eval ... --output merged.csv``:
  N processes, each with torchrun's default of one thread and its share of the decoding threads;
  rank 0 merges the rows and writes the output;
- the single process again with ``OMP_NUM_THREADS=1``, the per-process setting of the ranks:
  the reference for the byte-for-byte comparison (a convolution's float rounding can depend on
  how many threads split it, so equal outputs need equal thread counts).

Every command is a subprocess (interpreter start, imports, model construction, decoding, scoring,
writing), repeated ``--repeats`` times in a shuffled order; the table gives median wall seconds.
The merged output must equal the one-thread single-process output byte for byte; the default
single-process output is compared by its largest LPIPS/PSNR/SSIM difference.

Run (about 2 minutes on 2 CPU cores with the defaults)::

    python bench/bench_evaluate_sharded.py
    python bench/bench_evaluate_sharded.py --pairs 192 --size 128 --processes 2 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import describe_device, random_torch_home
from bench_evaluate import write_pairs


def run(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed


def largest_difference(first: Path, second: Path) -> float:
    """Largest absolute difference of any metric between two outputs (they must list the same pairs)."""
    rows = [list(csv.reader(path.open())) for path in (first, second)]
    if [row[0] for row in rows[0]] != [row[0] for row in rows[1]]:
        raise RuntimeError(f"{first} and {second} list different pairs")
    return max(
        abs(float(a) - float(b)) for x, y in zip(rows[0][1:], rows[1][1:]) for a, b in zip(x[1:-1], y[1:-1]) if a and b
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=192, help="image pairs (default 192)")
    parser.add_argument("--size", type=int, default=128, help="image height and width (default 128)")
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes (default 2)")
    parser.add_argument("--metrics", default="lpips,psnr,ssim", help="--metrics of the runs (default lpips,psnr,ssim)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_sharded_") as tmp, random_torch_home(["alexnet"]):
        root = Path(tmp)
        dir0, dir1 = write_pairs(root, args.pairs, args.size, noise=0.05)
        base = [
            sys.executable,
            "-m",
            "perceptual_loss",
            "eval",
            str(dir0),
            str(dir1),
            "--metrics",
            args.metrics,
            "--quiet",
        ]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}"]
        torchrun += ["-m", "perceptual_loss", *base[3:]]
        env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
        commands = {
            "single": (base + ["--output", str(root / "single.csv")], env),
            "sharded": (torchrun + ["--output", str(root / "merged.csv")], env),
            "single_one_thread": (base + ["--output", str(root / "single1.csv")], {**env, "OMP_NUM_THREADS": "1"}),
        }
        seconds: dict[str, list[float]] = {key: [] for key in commands}
        order, rng = list(commands), random.Random(0)
        for _ in range(args.repeats):
            rng.shuffle(order)
            for key in order:
                seconds[key].append(run(*commands[key]))
        median = {key: statistics.median(values) for key, values in seconds.items()}
        identical = (root / "merged.csv").read_bytes() == (root / "single1.csv").read_bytes()
        difference = largest_difference(root / "merged.csv", root / "single.csv")

    pairs = args.pairs
    rows = [
        ("1 process, default threads", median["single"]),
        (f"torchrun, {args.processes} processes x 1 thread", median["sharded"]),
        ("1 process, OMP_NUM_THREADS=1", median["single_one_thread"]),
    ]
    lines = [
        f"{describe_device(torch.device('cpu'))}, {pairs} PNG pairs of {args.size}x{args.size}, --metrics {args.metrics}, "
        f"LPIPS alex v0.1 (random trunk weights), median of {args.repeats} end-to-end runs, 1-min load average "
        f"{load_before:.2f} before and {os.getloadavg()[0]:.2f} after",
        "",
        "| command | wall s | pairs/s | vs 1 process (default threads) |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {value:.2f} | {pairs / value:.1f} | {median['single'] / value:.2f}x |" for name, value in rows],
        "",
        f"merged output == 1-process output with the ranks' thread count, byte for byte: {identical}",
        f"largest metric difference from the default-threads 1-process output: {difference:.2e}",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    if not identical:
        raise SystemExit("the sharded output differs from the single-process output")


if __name__ == "__main__":
    main()
