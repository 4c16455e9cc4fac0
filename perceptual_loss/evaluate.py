"""Score a folder of images against a folder of references: LPIPS, PSNR, SSIM, DISTS.

Files are paired by relative path (recursively). Nothing is dropped silently: files on one side
only, unreadable files and size mismatches are reported per file, and the counts say how many
pairs were actually compared. Pairs of equal size are batched; images are decoded on several
threads (one task per image, the next batches ahead of the one being scored) and become floats
one batch at a time; the LPIPS and DISTS models are built once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import DISTSLoss, LPIPSLoss
from .metrics import crop_border, psnr, rgb_to_y, ssim
from .weights import WeightsArg

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRICS = ("lpips", "psnr", "ssim", "dists")
"""Every metric the evaluator knows. DISTS needs ``pip install 'perceptual-loss[dists]'``."""
DEFAULT_METRICS = ("lpips", "psnr", "ssim")
Resize = Optional[Literal["bicubic"]]
MAX_DECODE_WORKERS = 8
"""Default cap on decoding threads (PNG and JPEG decoders release the GIL, so threads scale)."""
DECODE_AHEAD = 2
"""Batches decoded ahead of the one being scored: enough to keep every decoding thread busy."""


class EvaluationError(ValueError):
    """The folders cannot be evaluated at all (missing, empty, the same folder)."""


@dataclass
class Pairing:
    """Relative paths found in both folders, and those found in only one."""

    both: list[str]
    only_in_first: list[str]
    only_in_second: list[str]


@dataclass
class EvaluationResult:
    """Per-pair rows, a per-metric summary, and everything that was not compared.

    ``rows``: ``{"name": relative path, metric: value, ...}`` per compared pair, in name order.
    ``failures``: ``(name, reason)`` for pairs that could not be compared (unreadable, size).
    """

    metrics: tuple[str, ...]
    rows: list[dict[str, Union[str, float]]]
    failures: list[tuple[str, str]]
    only_in_first: list[str]
    only_in_second: list[str]
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {count, mean, std, min, max}}`` over the compared pairs (std: population)."""
        out: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            values = [float(row[metric]) for row in self.rows]
            finite = [v for v in values if math.isfinite(v)]
            out[metric] = {
                "count": len(values),
                "mean": statistics.fmean(values) if values else math.nan,
                "std": statistics.pstdev(finite) if len(finite) == len(values) and values else math.nan,
                "min": min(values) if values else math.nan,
                "max": max(values) if values else math.nan,
            }
        return out

    @property
    def ok(self) -> bool:
        """True when every paired file was compared (unmatched files are judged by the caller)."""
        return not self.failures

    def to_json(self, path: Union[str, Path]) -> None:
        data = {
            "settings": self.settings,
            "summary": self.summary,
            "rows": self.rows,
            "failures": [{"name": n, "reason": r} for n, r in self.failures],
            "only_in_first": self.only_in_first,
            "only_in_second": self.only_in_second,
        }
        Path(path).write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")

    def to_csv(self, path: Union[str, Path]) -> None:
        """One row per compared pair; failures and unmatched files as rows with a ``status``."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", *self.metrics, "status"])
            for row in self.rows:
                writer.writerow([row["name"], *(repr(float(row[m])) for m in self.metrics), "ok"])
            for name, reason in self.failures:
                writer.writerow([name, *([""] * len(self.metrics)), f"failed: {reason}"])
            for name in self.only_in_first:
                writer.writerow([name, *([""] * len(self.metrics)), "only in first folder"])
            for name in self.only_in_second:
                writer.writerow([name, *([""] * len(self.metrics)), "only in second folder"])

    def table(self) -> str:
        """A human-readable summary table."""
        lines = [f"{'metric':8s} {'count':>6s} {'mean':>10s} {'std':>10s} {'min':>10s} {'max':>10s}"]
        for metric, s in self.summary.items():
            lines.append(f"{metric:8s} {s['count']:6d} {s['mean']:10.4f} {s['std']:10.4f} {s['min']:10.4f} {s['max']:10.4f}")
        lines.append(
            f"compared {len(self.rows)} pair(s); failed {len(self.failures)}; only in first folder "
            f"{len(self.only_in_first)}; only in second folder {len(self.only_in_second)}"
        )
        return "\n".join(lines)


def find_images(folder: Path) -> set[str]:
    """Relative POSIX paths of image files under ``folder`` (recursive, case-insensitive suffixes)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def pair_folders(first: Union[str, Path], second: Union[str, Path]) -> Pairing:
    """Pair image files of two folders by relative path.

    Raises:
        EvaluationError: a folder is missing or not a folder, both are the same folder, or
            neither holds an image.
    """
    first, second = Path(first), Path(second)
    for folder in (first, second):
        if not folder.exists():
            raise EvaluationError(f"Folder {str(folder)!r} does not exist.")
        if not folder.is_dir():
            raise EvaluationError(f"{str(folder)!r} is not a folder.")
    if first.resolve() == second.resolve():
        raise EvaluationError(f"Both arguments are the same folder ({first}): give the outputs and the references.")
    a, b = find_images(first), find_images(second)
    if not a and not b:
        raise EvaluationError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {first} or {second}.")
    return Pairing(sorted(a & b), sorted(a - b), sorted(b - a))


def read_image(path: Path) -> Tensor:
    """Decode an image file to ``(H, W, 3)`` RGB, as stored: no conversion to float yet.

    Returns ``uint8`` in ``[0, 255]`` for 8-bit files (grayscale and palette converted to RGB,
    alpha dropped), or ``float32`` in ``[0, 1]`` for 16-bit grayscale. :func:`to_unit_batch`
    turns a list of them into a float batch in one pass.

    Raises:
        OSError: unreadable or corrupt file (the message names it).
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale
                array = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 65535.0
                return array.clamp(0, 1)[:, :, None].expand(-1, -1, 3)
            return torch.from_numpy(np.array(image.convert("RGB")))
    except Exception as error:  # noqa: BLE001 - PIL raises many types; name the file once
        raise OSError(f"cannot read image {path}: {error}") from error


def to_unit_batch(images: Sequence[Tensor], device: Union[str, torch.device] = "cpu") -> Tensor:
    """Stack :func:`read_image` outputs of one size into ``(N, 3, H, W)`` float32 in ``[0, 1]``.

    The result is in ``torch.channels_last`` memory (the decoder's pixel order, which the
    backbones use anyway). 8-bit images travel to ``device`` as bytes and become floats there:
    ``value / 255``, the same numbers as converting each image on its own.
    """
    if all(image.dtype == torch.uint8 for image in images):
        batch = torch.stack(list(images)).to(device)
        return batch.permute(0, 3, 1, 2).float().div_(255.0)
    floats = [image.float().div_(255.0) if image.dtype == torch.uint8 else image.float() for image in images]
    return torch.stack(floats).to(device).permute(0, 3, 1, 2)


def load_image(path: Path) -> Tensor:
    """``(3, H, W)`` float32 RGB in ``[0, 1]``: :func:`read_image`, then :func:`to_unit_batch`.

    Raises:
        OSError: unreadable or corrupt file (the message names it).
    """
    return to_unit_batch([read_image(path)])[0]


def default_workers() -> int:
    """Decoding threads by default: the CPU cores this process may use, at most :data:`MAX_DECODE_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_DECODE_WORKERS))


def _image_size(path: Path) -> Optional[tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:  # noqa: BLE001 - reported when the file is decoded
        return None


def evaluate_folders(
    first: Union[str, Path],
    second: Union[str, Path],
    metrics: Sequence[str] = DEFAULT_METRICS,
    net: Literal["alex", "vgg", "squeeze"] = "alex",
    version: Literal["0.1", "0.0"] = "0.1",
    batch_size: int = 8,
    device: Union[str, torch.device] = "cpu",
    y_channel: bool = False,
    crop: int = 0,
    resize: Resize = None,
    weights: WeightsArg = "imagenet",
    progress: Optional[Callable[[int], None]] = None,
    workers: Optional[int] = None,
) -> EvaluationResult:
    """Compare each image in ``first`` with the image of the same relative path in ``second``.

    Args:
        first, second: folders, e.g. model outputs and ground truth.
        metrics: any of ``"lpips"``, ``"psnr"``, ``"ssim"``, ``"dists"`` (default: the first
            three). DISTS equals ``DISTS_pytorch.DISTS`` on the images as they are (no resize).
        net, version, weights: the LPIPS model (see :class:`~perceptual_loss.LPIPSLoss`);
            ``weights`` is a path only for LPIPS: DISTS always reads VGG16's ImageNet file, or
            random weights with ``weights=None``.
        batch_size: pairs of equal size scored together.
        device: where the metrics run.
        y_channel: PSNR/SSIM on the BT.601 luma (SR convention) instead of RGB. LPIPS always
            sees RGB.
        crop: pixels shaved from each border before PSNR/SSIM (SR convention: the scale).
        resize: ``None`` (a size mismatch fails that pair) or ``"bicubic"`` (the second image is
            resized to the first's size, antialiased).
        progress: called with the number of pairs just finished.
        workers: threads decoding images (``None``: one per CPU core, at most
            :data:`MAX_DECODE_WORKERS`). They decode the next batches while one is scored, and
            each image is its own task, so all of them help whenever scoring waits for pixels.

    PSNR and SSIM use ``data_range=1`` on images scaled to ``[0, 1]`` (i.e. 255 for 8-bit files).

    Returns:
        :class:`EvaluationResult`.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise EvaluationError(f"Unknown metric(s) {unknown}; choose from {METRICS}.")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1; got {batch_size}.")
    if workers is not None and workers < 1:
        raise EvaluationError(f"workers must be >= 1; got {workers}.")
    workers = workers or default_workers()
    pairing = pair_folders(first, second)
    first, second = Path(first), Path(second)
    device = torch.device(device)
    # check_inputs=False: the images were decoded to [0, 1] here, so the range scan is redundant.
    networks: dict[str, torch.nn.Module] = {}
    if "lpips" in metrics:
        networks["lpips"] = LPIPSLoss(net=net, version=version, reduction="none", weights=weights, check_inputs=False)
    if "dists" in metrics:
        networks["dists"] = DISTSLoss(reduction="none", weights=None if weights is None else "imagenet", check_inputs=False)
    networks = {name: network.to(device) for name, network in networks.items()}

    failures: list[tuple[str, str]] = []
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for name in pairing.both:
        size = _image_size(first / name)
        groups[size if size is not None else (0, 0)].append(name)
    batches = [names[i : i + batch_size] for _, names in sorted(groups.items()) for i in range(0, len(names), batch_size)]

    rows: list[dict[str, Union[str, float]]] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        in_flight: deque[list[Future[Union[Loaded, tuple[str, str]]]]] = deque()
        for index in range(len(batches)):
            while len(in_flight) <= DECODE_AHEAD and index + len(in_flight) < len(batches):
                names = batches[index + len(in_flight)]
                in_flight.append([pool.submit(_decode_pair, name, first, second, resize) for name in names])
            decoded = [future.result() for future in in_flight.popleft()]
            loaded = [item for item in decoded if not isinstance(item[1], str)]
            failures.extend(item for item in decoded if isinstance(item[1], str))
            for size_group in _same_size(loaded):
                rows.extend(_score(size_group, metrics, networks, device, y_channel, crop, failures))
            if progress is not None:
                progress(len(batches[index]))
    rows.sort(key=lambda row: str(row["name"]))
    failures.sort()
    settings = {
        "first": str(first), "second": str(second), "metrics": list(metrics), "lpips_net": net, "lpips_version": version,
        "lpips_weights": str(weights), "psnr_ssim_data_range": 1.0, "y_channel": y_channel, "crop_border": crop,
        "resize": resize,
    }  # fmt: skip
    for name, reason in failures:
        logger.warning("%s: %s", name, reason)
    return EvaluationResult(tuple(metrics), rows, failures, pairing.only_in_first, pairing.only_in_second, settings)


Loaded = tuple[str, Tensor, Tensor]
"""A pair's name and its two images as :func:`read_image` gives them, ``(H, W, 3)``."""


def _decode_pair(name: str, first: Path, second: Path, resize: Resize) -> Union[Loaded, tuple[str, str]]:
    """``(name, image, reference)`` as :func:`read_image` gives them, or ``(name, reason)``."""
    try:
        a, b = read_image(first / name), read_image(second / name)
    except OSError as error:
        return name, str(error)
    if a.shape != b.shape:
        if resize is None:
            return name, f"size mismatch: {a.shape[0]}x{a.shape[1]} vs {b.shape[0]}x{b.shape[1]} (use --resize bicubic)"
        resized = F.interpolate(to_unit_batch([b]), a.shape[:2], mode="bicubic", antialias=True, align_corners=False)
        b = resized.clamp(0, 1)[0].permute(1, 2, 0)  # (H, W, 3) float in [0, 1], as read_image gives
    return name, a, b


def _same_size(loaded: list[Loaded]) -> Iterator[list[Loaded]]:
    by_size: dict[tuple[int, ...], list[Loaded]] = defaultdict(list)
    for item in loaded:
        by_size[tuple(item[1].shape)].append(item)
    yield from by_size.values()


@torch.inference_mode()
def _score(
    items: list[Loaded],
    metrics: Sequence[str],
    networks: dict[str, torch.nn.Module],
    device: torch.device,
    y_channel: bool,
    crop: int,
    failures: list[tuple[str, str]],
) -> list[dict[str, Union[str, float]]]:
    names = [name for name, _, _ in items]
    a = to_unit_batch([x for _, x, _ in items], device)
    b = to_unit_batch([y for _, _, y in items], device)
    try:
        values: dict[str, Tensor] = {}
        for metric, network in networks.items():
            values[metric] = network(a, b)
        ya, yb = (rgb_to_y(a), rgb_to_y(b)) if y_channel else (a, b)
        ya, yb = crop_border(ya, crop), crop_border(yb, crop)
        if "psnr" in metrics:
            values["psnr"] = psnr(ya, yb)
        if "ssim" in metrics:
            values["ssim"] = ssim(ya, yb)
    except ValueError as error:  # e.g. smaller than LPIPS', DISTS' or SSIM's minimum size
        failures.extend((name, str(error)) for name in names)
        return []
    table = {metric: values[metric].tolist() for metric in metrics}
    return [{"name": name, **{m: float(table[m][i]) for m in metrics}} for i, name in enumerate(names)]
