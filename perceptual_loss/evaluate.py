"""Score a folder of images against a folder of references: LPIPS, PSNR, SSIM.

Files are paired by relative path (recursively). Nothing is dropped silently: files on one side
only, unreadable files and size mismatches are reported per file, and the counts say how many
pairs were actually compared. Pairs of equal size are batched; images are decoded in a background
thread while the previous batch is scored; the LPIPS model is built once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import LPIPSLoss
from .metrics import crop_border, psnr, rgb_to_y, ssim
from .weights import WeightsArg

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRICS = ("lpips", "psnr", "ssim")
Resize = Optional[Literal["bicubic"]]


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


def load_image(path: Path) -> Tensor:
    """``(3, H, W)`` float32 RGB in ``[0, 1]`` (grayscale and palette converted; alpha dropped).

    Raises:
        OSError, ValueError: unreadable or corrupt file (the message names it).
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale
                array = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 65535.0
                return array.clamp(0, 1).expand(3, -1, -1).contiguous()
            rgb = image.convert("RGB")
            data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float().div_(255.0)
    except Exception as error:  # noqa: BLE001 - PIL raises many types; name the file once
        raise OSError(f"cannot read image {path}: {error}") from error


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
    metrics: Sequence[str] = METRICS,
    net: Literal["alex", "vgg", "squeeze"] = "alex",
    version: Literal["0.1", "0.0"] = "0.1",
    batch_size: int = 8,
    device: Union[str, torch.device] = "cpu",
    y_channel: bool = False,
    crop: int = 0,
    resize: Resize = None,
    weights: WeightsArg = "imagenet",
    progress: Optional[Callable[[int], None]] = None,
) -> EvaluationResult:
    """Compare each image in ``first`` with the image of the same relative path in ``second``.

    Args:
        first, second: folders, e.g. model outputs and ground truth.
        metrics: any of ``"lpips"``, ``"psnr"``, ``"ssim"``.
        net, version, weights: the LPIPS model (see :class:`~perceptual_loss.LPIPSLoss`).
        batch_size: pairs of equal size scored together.
        device: where the metrics run.
        y_channel: PSNR/SSIM on the BT.601 luma (SR convention) instead of RGB. LPIPS always
            sees RGB.
        crop: pixels shaved from each border before PSNR/SSIM (SR convention: the scale).
        resize: ``None`` (a size mismatch fails that pair) or ``"bicubic"`` (the second image is
            resized to the first's size, antialiased).
        progress: called with the number of pairs just finished.

    PSNR and SSIM use ``data_range=1`` on images scaled to ``[0, 1]`` (i.e. 255 for 8-bit files).

    Returns:
        :class:`EvaluationResult`.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise EvaluationError(f"Unknown metric(s) {unknown}; choose from {METRICS}.")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1; got {batch_size}.")
    pairing = pair_folders(first, second)
    first, second = Path(first), Path(second)
    device = torch.device(device)
    # check_inputs=False: the images were decoded to [0, 1] here, so the range scan is redundant.
    lpips = (
        LPIPSLoss(net=net, version=version, reduction="none", weights=weights, check_inputs=False).to(device)
        if "lpips" in metrics
        else None
    )

    failures: list[tuple[str, str]] = []
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for name in pairing.both:
        size = _image_size(first / name)
        groups[size if size is not None else (0, 0)].append(name)
    batches = [names[i : i + batch_size] for _, names in sorted(groups.items()) for i in range(0, len(names), batch_size)]

    rows: list[dict[str, Union[str, float]]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending: Optional[Future] = pool.submit(_decode, batches[0], first, second, resize) if batches else None
        for index in range(len(batches)):
            assert pending is not None
            loaded, failed = pending.result()
            pending = pool.submit(_decode, batches[index + 1], first, second, resize) if index + 1 < len(batches) else None
            failures.extend(failed)
            for size_group in _same_size(loaded):
                rows.extend(_score(size_group, metrics, lpips, device, y_channel, crop, failures))
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


def _decode(names: list[str], first: Path, second: Path, resize: Resize) -> tuple[list[Loaded], list[tuple[str, str]]]:
    loaded: list[Loaded] = []
    failed: list[tuple[str, str]] = []
    for name in names:
        try:
            a, b = load_image(first / name), load_image(second / name)
        except OSError as error:
            failed.append((name, str(error)))
            continue
        if a.shape != b.shape:
            if resize is None:
                failed.append((name, f"size mismatch: {a.shape[1]}x{a.shape[2]} vs {b.shape[1]}x{b.shape[2]} (use --resize bicubic)"))
                continue
            b = F.interpolate(b[None], size=a.shape[1:], mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
        loaded.append((name, a, b))
    return loaded, failed


def _same_size(loaded: list[Loaded]) -> Iterator[list[Loaded]]:
    by_size: dict[tuple[int, ...], list[Loaded]] = defaultdict(list)
    for item in loaded:
        by_size[tuple(item[1].shape)].append(item)
    yield from by_size.values()


@torch.inference_mode()
def _score(
    items: list[Loaded],
    metrics: Sequence[str],
    lpips: Optional[LPIPSLoss],
    device: torch.device,
    y_channel: bool,
    crop: int,
    failures: list[tuple[str, str]],
) -> list[dict[str, Union[str, float]]]:
    names = [name for name, _, _ in items]
    a = torch.stack([x for _, x, _ in items]).to(device)
    b = torch.stack([y for _, _, y in items]).to(device)
    try:
        values: dict[str, Tensor] = {}
        if lpips is not None and "lpips" in metrics:
            values["lpips"] = lpips(a, b)
        ya, yb = (rgb_to_y(a), rgb_to_y(b)) if y_channel else (a, b)
        ya, yb = crop_border(ya, crop), crop_border(yb, crop)
        if "psnr" in metrics:
            values["psnr"] = psnr(ya, yb)
        if "ssim" in metrics:
            values["ssim"] = ssim(ya, yb)
    except ValueError as error:  # e.g. smaller than LPIPS' or SSIM's minimum size
        failures.extend((name, str(error)) for name in names)
        return []
    table = {metric: values[metric].tolist() for metric in metrics}
    return [{"name": name, **{m: float(table[m][i]) for m in metrics}} for i, name in enumerate(names)]
