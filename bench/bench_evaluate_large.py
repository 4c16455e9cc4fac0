"""Peak memory of ``perceptual-loss eval`` on one large pair (4K/8K frames), tiled as the evaluator does.

What is measured: a pair of ``--size`` x ``--size`` PNG files (noise and a noisier copy) scored by
the command line in a fresh process, ``--metrics lpips --net vgg`` by default, random trunk
weights in a temporary ``$TORCH_HOME``. Reported: the child's peak resident memory
(``ru_maxrss``) and its wall time, start-up and decoding included. ``--untiled`` sets the
evaluator's ``TILE`` out of reach, for the untiled figure (it needs several times the memory).

Run::

    python bench/bench_evaluate_large.py --size 4096
    python bench/bench_evaluate_large.py --size 2048 --untiled
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import random_torch_home
from PIL import Image

CHILD = """
import sys
from perceptual_loss.evaluate import run
if {untiled}:
    run.TILE = 10**9
from perceptual_loss.cli import main
sys.exit(main(sys.argv[1:]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--net", default="vgg", choices=("alex", "vgg", "squeeze"))
    parser.add_argument("--untiled", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with (
        tempfile.TemporaryDirectory(prefix="bench_large_") as folder,
        random_torch_home(["alexnet", "vgg16", "squeezenet1_1"]),
    ):
        image = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        noisy = np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
        for side, array in (("a", image), ("b", noisy)):
            (Path(folder) / side).mkdir()
            Image.fromarray(array).save(Path(folder) / side / "frame.png")
        command = [sys.executable, "-c", CHILD.format(untiled=args.untiled), "eval", f"{folder}/a", f"{folder}/b"]
        command += ["--metrics", "lpips", "--net", args.net, "--output", f"{folder}/out.csv"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        score = Path(f"{folder}/out.csv").read_text().splitlines()[1]
    mode = "untiled" if args.untiled else "tiled (the evaluator's default)"
    print(
        f"perceptual-loss eval, one {args.size}x{args.size} PNG pair, LPIPS-{args.net}, {mode}, {os.cpu_count()} CPU "
        f"cores, random weights: peak RSS {peak:.0f} MB, {seconds:.1f} s end to end (row: {score})"
    )


if __name__ == "__main__":
    main()
