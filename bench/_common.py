"""Helpers shared by the benchmark scripts in ``bench/`` (not a benchmark itself).

- :class:`Floor` / :func:`floor_step`: the bare truncated torchvision backbone a loss is compared to.
- :class:`Inputs`: one reproducible pred/target pair, ``pred`` a leaf that requires grad.
- :func:`time_steps`: interleaved, shuffled round-robin timing; the median per case.
- :func:`peak_mb`: peak tensor memory of one step per case (CUDA allocator stats or, on CPU,
  ``torch.profiler`` allocation events).
- :func:`random_torch_home`: a temporary ``$TORCH_HOME`` whose hub cache holds randomly
  initialised torchvision weights under the file names torchvision expects, for code (peers,
  the CLI) that loads "pretrained" weights and cannot download them here.

The scripts import this module as ``_common``: run them as ``python bench/<script>.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from perceptual_loss.backbones import IMAGENET_MEAN, IMAGENET_STD
from perceptual_loss.weights import imagenet_weights_path

WARMUP = 2
Step = Callable[[], None]


@dataclass(frozen=True)
class Floor:
    """The bare backbone ``torchvision.models.<arch>(weights=None).features[: last + 1]``.

    ``channels_last``: weights and input in ``torch.channels_last``, the fastest way to run the
    same bare backbone on CPU and CUDA (the library's extractors do this there); otherwise torchvision's
    default layout, as a user would run it.
    """

    arch: str
    last: int
    channels_last: bool = False

    @property
    def key(self) -> str:
        return f"{self.arch}[:{self.last + 1}]" + (" channels_last" if self.channels_last else "")

    def as_channels_last(self) -> Floor:
        return Floor(self.arch, self.last, channels_last=True)

    def build(self, device: torch.device) -> Callable[[Tensor], Tensor]:
        """The frozen backbone on ``device`` as ``images in [0, 1] -> last output``, with the plain
        ImageNet normalisation ``(x - mean) / std`` and the input in this floor's layout."""
        net = getattr(torchvision.models, self.arch)(weights=None).features[: self.last + 1]
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        net = net.to(device, memory_format=layout).eval().requires_grad_(False)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        return lambda images: net(((images - mean) / std).contiguous(memory_format=layout))


LPIPS_FLOORS = {"alex": Floor("alexnet", 11), "vgg": Floor("vgg16", 29), "squeeze": Floor("squeezenet1_1", 12)}
"""The bare trunk of each LPIPS net, up to its last tap (relu5 / relu5_3 / fire9)."""


@dataclass
class Inputs:
    """One image pair, in ``[0, 1]`` and (same values) in ``[-1, 1]``; ``pred*`` require grad.

    Every step frees the gradients it made before returning, so each starts from the same memory.
    """

    pred: Tensor
    target: Tensor
    pred_signed: Tensor
    target_signed: Tensor

    @classmethod
    def random(cls, shape: tuple[int, ...], device: torch.device) -> Inputs:
        generator = torch.Generator().manual_seed(0)
        pred, target = (torch.rand(shape, generator=generator).to(device) for _ in range(2))
        return cls(pred.requires_grad_(), target, (2 * pred - 1).detach().requires_grad_(), 2 * target - 1)

    def clear_grads(self) -> None:
        self.pred.grad = self.pred_signed.grad = None


def floor_step(floor: Floor, inputs: Inputs, device: torch.device) -> Step:
    """The bare truncated backbone: plain normalisation, L1 on the last output, backward to pred."""
    net = floor.build(device)

    def step() -> None:
        out = net(inputs.pred)
        with torch.no_grad():
            ref = net(inputs.target)
        (out - ref).abs().mean().backward()
        inputs.clear_grads()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps: dict[str, Step], iters: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds per step; every iteration runs each case once, in a shuffled order."""
    samples: dict[str, list[float]] = {key: [] for key in steps}
    order, rng = list(steps), random.Random(0)
    for iteration in range(WARMUP + iters):
        rng.shuffle(order)
        for key in order:
            synchronize(device)
            start = time.perf_counter()
            steps[key]()
            synchronize(device)
            if iteration >= WARMUP:
                samples[key].append(time.perf_counter() - start)
    return {key: 1000 * statistics.median(values) for key, values in samples.items()}


def cuda_peak_mb(step: Step, device: torch.device) -> float:
    """Peak CUDA memory of one (already warmed-up) step above what was allocated before it."""
    gc.collect()
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def cpu_peak_mb(steps: dict[str, Step]) -> dict[str, float]:
    """Peak tensor memory (MB) of one step per case, from ``torch.profiler`` allocation events."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        for key, step in steps.items():
            with torch.profiler.record_function(f"bench:{key}"):
                step()
    # The raw Kineto events keep every allocation (+bytes) and free (-bytes) with its timestamp;
    # the aggregated `prof.events()` attribute most of them to operators instead.
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    spans = {
        e.name().removeprefix("bench:"): (e.start_ns(), e.end_ns()) for e in events if e.name().startswith("bench:")
    }
    peaks: dict[str, float] = {}
    for key, (start, end) in spans.items():
        total = sum(nbytes for time_ns, nbytes in memory if time_ns < start)
        peak = running = total
        for time_ns, nbytes in memory:
            if start <= time_ns <= end:
                running += nbytes
                peak = max(peak, running)
        peaks[key] = (peak - total) / 2**20
    return peaks


def peak_mb(steps: dict[str, Step], device: torch.device) -> dict[str, float]:
    """Peak tensor memory (MB) of one (already warmed-up) step per case, on ``device``."""
    if device.type == "cuda":
        return {key: cuda_peak_mb(step, device) for key, step in steps.items()}
    return cpu_peak_mb(steps)


def describe_device(device: torch.device) -> str:
    """``torch``/``torchvision`` versions, the device and the thread count, for a report header."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {where}, "
        f"threads {torch.get_num_threads()}"
    )


@contextmanager
def random_torch_home(backbones: Iterable[str], seed: int = 0) -> Iterator[Path]:
    """Point ``$TORCH_HOME`` at a temporary hub cache of random ``backbones`` weights, then restore it.

    Each file is ``torchvision.models.<backbone>(weights=None).state_dict()`` saved under the name
    torchvision's weights API (and ``pretrained=True``) reads from the hub cache, as in
    ``tests/conftest.py``. Child processes inherit the variable.
    """
    previous = os.environ.get("TORCH_HOME")
    with tempfile.TemporaryDirectory(prefix="bench_torch_home_") as home:
        os.environ["TORCH_HOME"] = home
        try:
            for backbone in backbones:
                path = imagenet_weights_path(backbone)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.manual_seed(seed)
                torch.save(getattr(torchvision.models, backbone)(weights=None).state_dict(), path)
            yield Path(home)
        finally:
            if previous is None:
                os.environ.pop("TORCH_HOME", None)
            else:
                os.environ["TORCH_HOME"] = previous


MEASUREMENT_NOTE = (
    "ms: median per forward+backward step, cases interleaved. peak MB: tensor memory allocated during one step "
    "above what was allocated before it (CPU: torch.profiler allocation events; CUDA: max_memory_allocated)."
)


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every forward+backward benchmark shares: device, batch, size, iterations."""
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"cpu | cuda[:i] (default {default_device})")
    parser.add_argument("--batch", type=int, default=4, help="images per batch (default 4)")
    parser.add_argument("--size", type=int, default=128, help="image height and width (default 128)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per case (default 10)")


def parse_with_cases(
    parser: argparse.ArgumentParser, known: Iterable[str], default: Iterable[str], note: str = ""
) -> argparse.Namespace:
    """Add ``--cases`` (a comma list from ``known``) and ``--out``, parse, and check the cases."""
    known = list(known)
    parser.add_argument("--cases", default=",".join(default), help="comma list of: " + ", ".join(known) + note)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.cases = [key.strip() for key in args.cases.split(",") if key.strip()]
    unknown = [key for key in args.cases if key not in known]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(known)}")
    return args


def step_header(args: argparse.Namespace, device: torch.device, load_before: float) -> str:
    """The first report line: machine, batch, iterations and the load around the run."""
    return (
        f"{describe_device(device)}, batch {args.batch}x3x{args.size}x{args.size}, "
        f"median of {args.iters} forward+backward steps after {WARMUP} warm-up, 1-min load average "
        f"{load_before:.2f} before and {os.getloadavg()[0]:.2f} after the run (this process alone adds about its "
        "thread count)"
    )


def emit_report(sections: list[str], skipped: list[str], out: Path | None) -> None:
    """Print the report (sections separated by blank lines) and write it to ``out`` if given."""
    report = "\n\n".join(sections)
    if skipped:
        report += "\nskipped: " + "; ".join(skipped)
    print(report)
    if out:
        out.write_text(report + "\n")
