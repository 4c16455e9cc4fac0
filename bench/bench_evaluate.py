"""Wall time of scoring two folders with LPIPS: ``evaluate_folders`` against the lpips package's loop.

What is measured, in one process, on the same folders and the same random trunk weights:

- ``evaluate_folders(dir0, dir1, metrics=["lpips"], net=..., batch_size=8, weights=<file>)``: the
  library's path (LPIPS model built once inside the call, pairs of equal size batched, images
  decoded with PIL in a background thread while the previous batch is scored);
- the ``lpips`` package's own loop, as in its ``lpips_2dirs.py`` script: build
  ``lpips.LPIPS(net=..., pnet_rand=True)``, load the same trunk weights into it, then for each file
  of ``dir0`` that ``dir1`` also has, load both images, call ``model.forward(img0, img1)`` and
  write the line ``name: distance`` to a file, one pair at a time. As in the script, autograd is
  on: it has no ``torch.no_grad()``, and lpips' linear heads require grad, so every pair builds a
  small graph. Images are read as the script reads them, with ``lpips.load_image`` (OpenCV's
  ``cv2.imread``), when OpenCV is installed (``pip install opencv-python-headless``); otherwise
  with PIL to the same ``(H, W, 3)`` uint8 array (the header says which). Either way
  ``lpips.im2tensor`` makes the tensor;
- the same loop under ``torch.no_grad()``, a faster variant of the script a careful user might
  write, for reference;
- the floor: the bare truncated torchvision trunk alone, with its input normalisation
  (channels_last, inference mode, batches of ``--batch-size`` pairs, both images of a pair in one
  call), on images decoded before the clock starts. No decoding, no LPIPS head, no model
  construction: the convolutions that any implementation of the same network must run. With
  PyTorch's float32 convolutions, ``loop / floor`` is therefore the largest speed-up over the
  script's loop that an implementation could reach on this machine;
- decoding alone: every PNG of both folders read to pixels with ``read_image`` (the evaluator's
  decoder), on as many threads as the evaluator uses by default. Decoding is work every path does:
  ``loop / (floor + decoding)`` is the tighter ceiling for an implementation with this decoder.

All timings are end to end: model construction, weight loading, decoding, scoring. Each path
runs once untimed (warm-up), then ``--repeats`` times, the paths alternated in a shuffled order
(fixed seed); the table gives the median wall time, pairs/s and the speed-ups (loop / library).
The LPIPS values of the library and the script's loop must agree: the max absolute difference is
reported (it should be below 1e-5).

The speed-up depends on the image size: batching saves per-call overhead, which dominates small
images; large images are dominated by the convolutions both paths run. Run several ``--size``
values for the whole picture.

For information, the CLI (``python -m perceptual_loss eval DIR0 DIR1 --metrics lpips``) runs once
as a subprocess (interpreter start and imports included), next to a bare
``python -c "import perceptual_loss"`` for the start-up share.

Data: ``--pairs`` (default 48) RGB PNG pairs of ``--size`` (default 256) pixels, written to a
temporary folder: a smooth random image (bicubic upsampling of 1/8-size uniform noise) and the
same image plus Gaussian noise (``--noise``, default 0.05 of the range), clipped to 8 bits.
Weights: a randomly initialised ``torchvision.models.<trunk>(weights=None)`` state dict saved under
torchvision's file name in a temporary ``$TORCH_HOME`` hub cache; ``evaluate_folders`` gets its
path, the CLI finds it through ``$TORCH_HOME`` (``--weights imagenet``). Speed does not depend on
weight values. LPIPS' linear heads are the files the ``lpips`` package ships.

Run (about 1 minute on 2 idle CPU cores with the defaults; 3 at 512 px)::

    python bench/bench_evaluate.py
    python bench/bench_evaluate.py --pairs 96 --size 512 --repeats 5 --out bench/evaluate.md
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from _common import LPIPS_FLOORS, describe_device, random_torch_home
from PIL import Image

from perceptual_loss import evaluate_folders
from perceptual_loss.evaluate import default_workers, load_image, read_image
from perceptual_loss.losses.lpips import LPIPS_NETWORKS
from perceptual_loss.weights import imagenet_weights_path

Scores = dict[str, float]
"""LPIPS value per file name."""
Net = Literal["alex", "vgg", "squeeze"]


def write_pairs(root: Path, pairs: int, size: int, noise: float, seed: int = 0) -> tuple[Path, Path]:
    """``root/dir0`` and ``root/dir1`` holding ``pairs`` PNGs each: a smooth image and a noisy copy."""
    rng = np.random.default_rng(seed)
    dir0, dir1 = root / "dir0", root / "dir1"
    dir0.mkdir()
    dir1.mkdir()
    for index in range(pairs):
        coarse = rng.integers(0, 256, (max(size // 8, 1), max(size // 8, 1), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
        noisy = np.clip(base + rng.normal(0.0, 255.0 * noise, base.shape), 0, 255)
        Image.fromarray(base.astype(np.uint8)).save(dir0 / f"{index:04d}.png")
        Image.fromarray(np.rint(noisy).astype(np.uint8)).save(dir1 / f"{index:04d}.png")
    return dir0, dir1


def library_scores(dir0: Path, dir1: Path, net: Net, batch_size: int, weights: Path, device: str = "cpu") -> Scores:
    """``perceptual_loss.evaluate_folders`` with LPIPS only."""
    result = evaluate_folders(
        dir0, dir1, metrics=["lpips"], net=net, batch_size=batch_size, weights=weights, device=device
    )
    if result.failures:
        raise RuntimeError(f"evaluate_folders failed on {result.failures}")
    return {str(row["name"]): float(row["lpips"]) for row in result.rows}


def build_reference(net: str, weights: Path) -> torch.nn.Module:
    """``lpips.LPIPS`` with its shipped heads and the trunk weights of ``weights`` (a torchvision file)."""
    import lpips  # the peer is only needed here

    with warnings.catch_warnings():  # lpips builds its trunk with torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    for name, piece in model.net.named_children():
        if name.startswith("slice"):
            piece.load_state_dict({k: v for k, v in features.items() if k.split(".")[0] in piece._modules}, strict=True)
    return model.eval()


def script_reader() -> tuple[Callable[[Path], np.ndarray], str]:
    """How the loop reads an image: ``lpips.load_image`` (OpenCV) if it can, else PIL; and its name.

    Both give the same ``(H, W, 3)`` uint8 RGB array for a PNG.
    """
    try:
        import cv2  # lpips.load_image imports it
        import lpips
    except ImportError:

        def read_rgb(path: Path) -> np.ndarray:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))

        return read_rgb, "PIL (OpenCV, which lpips.load_image needs, is not installed)"
    return (lambda path: lpips.load_image(str(path))), f"lpips.load_image (OpenCV {cv2.__version__}), as the script"


def reference_scores(
    dir0: Path, dir1: Path, net: str, weights: Path, out: Path, no_grad: bool = False, device: str = "cpu"
) -> Scores:
    """The loop of lpips' ``lpips_2dirs.py``: one pair at a time, images decoded inline.

    As in the script, autograd stays on (it has no ``torch.no_grad()``; lpips' linear heads
    require grad, so each pair builds a small graph) and each distance is written to ``out``
    (the script also prints it; that is left out). ``no_grad=True``: the same loop under
    ``torch.no_grad()``, a faster variant of the script. ``device="cuda"``: the script's
    ``--use_gpu`` (the model and each image pair moved with ``.cuda()``).
    """
    import lpips  # the peer is only needed here

    model = build_reference(net, weights).to(device)
    read_rgb, _ = script_reader()
    scores: Scores = {}
    with open(out, "w") as handle, torch.set_grad_enabled(not no_grad):
        for name in os.listdir(dir0):
            if (dir1 / name).exists():
                img0 = lpips.im2tensor(read_rgb(dir0 / name)).to(device)
                img1 = lpips.im2tensor(read_rgb(dir1 / name)).to(device)
                dist01 = model.forward(img0, img1)
                handle.writelines("%s: %.6f\n" % (name, dist01))  # noqa: UP031 - the script's own line
                scores[name] = float(dist01)
    return scores


def trunk_floor(dir0: Path, dir1: Path, net: Net, batch_size: int, device: str = "cpu") -> Callable[[], Scores]:
    """A run of the bare trunk over every pair, on images decoded now, before any run is timed.

    Returns no scores (``{}``): it measures only the arithmetic every path has to do.
    """
    trunk = LPIPS_FLOORS[net].as_channels_last().build(torch.device(device))
    names = sorted(name for name in os.listdir(dir0) if (dir1 / name).exists())
    images = [(load_image(dir0 / name), load_image(dir1 / name)) for name in names]
    batches = [
        torch.stack([image for pair in images[i : i + batch_size] for image in pair]).to(device)
        for i in range(0, len(images), batch_size)
    ]

    def run() -> Scores:
        with torch.inference_mode():
            for batch in batches:
                trunk(batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
        return {}

    return run


def decoding(dir0: Path, dir1: Path) -> Callable[[], Scores]:
    """A run that decodes every image of both folders, on the evaluator's default thread count."""
    paths = [folder / name for name in sorted(os.listdir(dir0)) if (dir1 / name).exists() for folder in (dir0, dir1)]
    workers = default_workers()

    def run() -> Scores:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(read_image, paths):
                pass
        return {}

    return run


def time_runs(runs: dict[str, Callable[[], Scores]], repeats: int) -> tuple[dict[str, float], dict[str, Scores]]:
    """Median wall seconds per run after one untimed warm-up each, runs alternated in shuffled order."""
    seconds: dict[str, list[float]] = {key: [] for key in runs}
    scores = {key: run() for key, run in runs.items()}  # warm-up
    order, rng = list(runs), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for key in order:
            start = time.perf_counter()
            runs[key]()
            seconds[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in seconds.items()}, scores


def time_command(command: list[str]) -> float:
    """Wall seconds of one subprocess (which must succeed), inheriting this process' environment."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def time_commands(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each subprocess over ``repeats`` runs, alternated in shuffled order."""
    seconds: dict[str, list[float]] = {key: [] for key in commands}
    order, rng = list(commands), random.Random(1)
    for _ in range(repeats):
        rng.shuffle(order)
        for key in order:
            seconds[key].append(time_command(commands[key]))
    return {key: statistics.median(values) for key, values in seconds.items()}


SEED_SCRIPT = """\
# lpips' lpips_2dirs.py (github.com/richzhang/PerceptualSimilarity), as shipped, minus the
# commented-out lines: the seed a user runs today. Its trunk's ImageNet weights come from the
# torch hub cache (here: the benchmark's random file under TORCH_HOME).
import argparse
import os
import lpips

parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument('-d0','--dir0', type=str, default='./imgs/ex_dir0')
parser.add_argument('-d1','--dir1', type=str, default='./imgs/ex_dir1')
parser.add_argument('-o','--out', type=str, default='./imgs/example_dists.txt')
parser.add_argument('-v','--version', type=str, default='0.1')
parser.add_argument('--use_gpu', action='store_true', help='turn on flag to use GPU')
parser.add_argument('--net', type=str, default='alex')
opt = parser.parse_args()

loss_fn = lpips.LPIPS(net=opt.net,version=opt.version)
if(opt.use_gpu):
    loss_fn.cuda()

f = open(opt.out,'w')
files = os.listdir(opt.dir0)

for file in files:
    if(os.path.exists(os.path.join(opt.dir1,file))):
        img0 = lpips.im2tensor(lpips.load_image(os.path.join(opt.dir0,file)))
        img1 = lpips.im2tensor(lpips.load_image(os.path.join(opt.dir1,file)))
        if(opt.use_gpu):
            img0 = img0.cuda()
            img1 = img1.cuda()
        dist01 = loss_fn.forward(img0,img1)
        print('%s: %.3f'%(file,dist01))
        f.writelines('%s: %.6f\\n'%(file,dist01))

f.close()
"""


def max_difference(first: Scores, second: Scores) -> float:
    if first.keys() != second.keys():
        raise RuntimeError(f"the two paths scored different files: {sorted(first.keys() ^ second.keys())}")
    return max(abs(first[name] - second[name]) for name in first)


def format_table(args: argparse.Namespace, median: dict[str, float], end_to_end: dict[str, float]) -> str:
    """In-process rows get pairs/s and the speed-ups; the subprocess rows are end to end (start-up included)."""
    cli, script, startup = end_to_end["cli"], end_to_end["script"], end_to_end["startup"]
    pairs, loop, quiet = args.pairs, median["lpips"], median["lpips_no_grad"]
    library, floor, decode = median["library"], median["floor"], median["decoding"]
    bound = floor + decode
    rows = [
        (f"perceptual_loss.evaluate_folders (batch {args.batch_size})", f"{library:.2f}", "median",
         f"{pairs / library:.1f}", f"{loop / library:.2f}", f"{quiet / library:.2f}"),
        ("lpips_2dirs.py loop, one pair at a time, as shipped (autograd on)", f"{loop:.2f}", "median",
         f"{pairs / loop:.1f}", "1.00", f"{quiet / loop:.2f}"),
        ("the same loop under torch.no_grad()", f"{quiet:.2f}", "median", f"{pairs / quiet:.1f}",
         f"{loop / quiet:.2f}", "1.00"),
        (f"floor: the bare {LPIPS_FLOORS[args.net].arch} trunk on pre-decoded images (batch {args.batch_size})",
         f"{floor:.2f}", "median", f"{pairs / floor:.1f}", f"{loop / floor:.2f} (the ceiling)",
         f"{quiet / floor:.2f}"),
        (f"decoding alone: every PNG read to pixels ({default_workers()} threads)",
         f"{decode:.2f}", "median", f"{pairs / decode:.1f}", "-", "-"),
        ("floor + decoding", f"{bound:.2f}", "sum", f"{pairs / bound:.1f}",
         f"{loop / bound:.2f} (ceiling with decoding)", f"{quiet / bound:.2f}"),
        ("end to end: python -m perceptual_loss eval --metrics lpips (subprocess)", f"{cli:.2f}", "median",
         f"{pairs / cli:.1f}", f"{script / cli:.2f} (vs the script, end to end)", "-"),
        ("end to end: lpips_2dirs.py as shipped (subprocess)", f"{script:.2f}", "median", f"{pairs / script:.1f}",
         "1.00", "-"),
        ("start-up share: import torch and the LPIPS model's modules (subprocess)", f"{startup:.2f}",
         "median", "-", "-", "-"),
    ]  # fmt: skip
    lines = [
        "| path | wall s | of | pairs/s | speed-up vs the script's loop | vs the loop under no_grad |",
        "|---|---:|---|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"evaluate_folders / (floor + decoding) = {library / bound:.2f} (issue target <= 1.3)"]
    return "\n".join(lines)


def header(args: argparse.Namespace, load_before: float) -> str:
    return (
        f"{describe_device(torch.device(args.device))}, {args.pairs} PNG pairs of {args.size}x{args.size}, LPIPS {args.net} "
        f"v0.1, median of {args.repeats} runs after 1 warm-up, 1-min load average {load_before:.2f} before and "
        f"{os.getloadavg()[0]:.2f} after the run"
    )


NOTES = (
    "All trunk weights random (one torchvision {trunk}(weights=None) file, used by both paths and, through "
    "TORCH_HOME, the CLI): speed does not depend on weight values. lpips heads: the files the lpips package ships.\n"
    "Wall times are end to end: model construction, weight loading, PNG decoding, scoring. The lpips loops read "
    "images with {reader}, then lpips.im2tensor; the script's loop runs with autograd on, as shipped.\n"
    "The floor runs only the trunk on images decoded before the clock starts: loop / floor bounds the speed-up "
    "of any implementation of the same network with PyTorch's float32 convolutions on this machine; "
    "loop / (floor + decoding) bounds it for one that also decodes with PIL.\n"
    "Issue target: evaluate_folders >= 2x faster than the script's loop on a 2-core CPU."
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=48, help="image pairs (default 48)")
    parser.add_argument("--size", type=int, default=256, help="image height and width (default 256)")
    parser.add_argument("--noise", type=float, default=0.05, help="std of the added noise, in [0, 1] units")
    parser.add_argument("--net", default="alex", choices=sorted(LPIPS_NETWORKS), help="LPIPS trunk (default alex)")
    parser.add_argument("--batch-size", type=int, default=8, help="evaluate_folders' batch size (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:i] for every path (default cpu)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    trunk = LPIPS_NETWORKS[args.net][0]
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp, random_torch_home([trunk]):
        dir0, dir1 = write_pairs(Path(tmp), args.pairs, args.size, args.noise)
        weights = imagenet_weights_path(trunk)
        out = Path(tmp) / "example_dists.txt"
        runs = {
            "library": lambda: library_scores(dir0, dir1, args.net, args.batch_size, weights, args.device),
            "lpips": lambda: reference_scores(dir0, dir1, args.net, weights, out, device=args.device),
            "lpips_no_grad": lambda: reference_scores(dir0, dir1, args.net, weights, out, True, args.device),
            "floor": trunk_floor(dir0, dir1, args.net, args.batch_size, args.device),
            "decoding": decoding(dir0, dir1),
        }
        median, scores = time_runs(runs, args.repeats)
        cli_command = [sys.executable, "-m", "perceptual_loss", "eval", str(dir0), str(dir1), "--metrics", "lpips"]
        cli_options = ["--net", args.net, "--batch-size", str(args.batch_size), "--device", args.device, "--quiet"]
        script = Path(tmp) / "lpips_2dirs.py"
        script.write_text(SEED_SCRIPT)
        script_command = [
            sys.executable,
            str(script),
            "-d0",
            str(dir0),
            "-d1",
            str(dir1),
            "-o",
            str(out),
            "--net",
            args.net,
        ]
        script_command += ["--use_gpu"] if args.device.startswith("cuda") else []
        imports = "import torch; import perceptual_loss.losses"
        end_to_end = time_commands(
            {"cli": cli_command + cli_options, "script": script_command, "startup": [sys.executable, "-c", imports]},
            args.repeats,
        )

    difference = max_difference(scores["library"], scores["lpips"])
    agreement = (
        f"max |LPIPS evaluate_folders - LPIPS lpips loop| over {len(scores['lpips'])} pairs: {difference:.2e} "
        f"(mean LPIPS {statistics.fmean(scores['lpips'].values()):.4f})"
    )
    notes = NOTES.format(trunk=trunk, reader=script_reader()[1])
    report = "\n\n".join([header(args, load_before), format_table(args, median, end_to_end), agreement, notes])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
