"""Shared pieces of the style-transfer examples: image loading, the criterion, outputs.

Images are given as ``skimage:<name>`` (a picture bundled with scikit-image, no download, e.g.
``skimage:astronaut``, ``skimage:chelsea``, ``skimage:immunohistochemistry``, ``skimage:gravel``;
``skimage:motorcycle`` is the left view of ``stereo_motorcycle``) or as a path to an image file.
Grayscale and RGBA images become RGB. Bad inputs raise :class:`ImageError` naming the path.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image

from perceptual_loss import CombinedLoss

from ..super_resolution.weights import ResolvedWeights, build_with_weights

logger = logging.getLogger(__name__)

SKIMAGE_PREFIX = "skimage:"
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


class ImageError(ValueError):
    """An image that cannot be used: missing file, unreadable file, unknown embedded name."""


def _skimage_array(name: str) -> np.ndarray:
    from skimage import data as skdata

    if name == "motorcycle":
        return skdata.stereo_motorcycle()[0]
    loader = getattr(skdata, name, None)
    if name.startswith("_") or not callable(loader) or name in ("download_all", "lbp_frontal_face_cascade_filename"):
        raise ImageError(
            f"Unknown scikit-image picture {SKIMAGE_PREFIX}{name}; e.g. skimage:astronaut, skimage:chelsea, skimage:gravel."
        )
    try:
        array = loader()
    except (OSError, ValueError, ImportError) as error:  # e.g. a picture that needs a download (pooch) offline
        raise ImageError(f"Cannot load {SKIMAGE_PREFIX}{name}: {error}") from None
    return np.asarray(array)


def _file_array(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageError(f"Image file not found: {path} (pass an existing file or skimage:<name>).")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened if opened.mode in ("L", "RGB", "RGBA") else opened.convert("RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"Cannot read image file {path}: {error}") from None


def load_image(source: str | Path, size: int | None = None) -> Tensor:
    """``skimage:<name>`` or a file path -> ``(1, 3, H, W)`` float in [0, 1].

    Args:
        source: see the module doc.
        size: resize so that the *shorter* side is ``size`` (aspect kept); ``None`` keeps the size.
    """
    text = str(source)
    array = (
        _skimage_array(text[len(SKIMAGE_PREFIX) :])
        if text.startswith(SKIMAGE_PREFIX)
        else _file_array(Path(text).expanduser())
    )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:  # grayscale -> RGB
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"Image {text} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    array = array[..., :3]
    if array.dtype == np.uint8:
        image = torch.from_numpy(np.array(array, copy=True)).float().div_(255)
    elif array.dtype == np.uint16:
        image = torch.from_numpy(array.astype(np.float32) / 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        image = torch.from_numpy(np.clip(array, 0, 1).astype(np.float32))
    else:
        raise ImageError(f"Image {text} has dtype {array.dtype}; expected 8/16-bit or float in [0, 1].")
    image = image.permute(2, 0, 1).unsqueeze(0).contiguous()
    if size is not None:
        image = resize_short_side(image, int(size))
    return image


def resize_short_side(image: Tensor, size: int) -> Tensor:
    """``(N, 3, H, W)`` -> shorter side ``size`` (bicubic, antialiased, clamped to [0, 1])."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new == (h, w):
        return image
    return F.interpolate(image, size=new, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)


def build_criterion(loss_cfg: Mapping[str, Any], weights: Any) -> tuple[CombinedLoss, ResolvedWeights]:
    """``CombinedLoss(perceptual=content, style=style, tv=tv)`` from a ``loss:`` config.

    ``loss_cfg`` keys: ``backbone``, ``content_layers``, ``content_weight``, ``content_distance``,
    ``style_layers``, ``style_weight``, ``tv_weight``. ``weights``: auto | imagenet | none | path.
    """
    backbone = str(loss_cfg.get("backbone", "vgg16"))
    perceptual = {
        "layers": list(loss_cfg["content_layers"]),
        "weight": float(loss_cfg["content_weight"]),
        "backbone": backbone,
        "distance": str(loss_cfg.get("content_distance", "l2")),
    }
    style = {"layers": list(loss_cfg["style_layers"]), "weight": float(loss_cfg["style_weight"]), "backbone": backbone}
    tv = float(loss_cfg.get("tv_weight", 0.0))
    return build_with_weights(
        lambda w: CombinedLoss(perceptual=perceptual, style=style, tv=tv, weights=w), weights, "the style-transfer loss"
    )


def side_by_side(images: Sequence[Tensor], height: int, padding: int = 4) -> Tensor:
    """``(3, H_i, W_i)`` images -> one ``(3, height + 2p, sum W_i' + ...)`` row, each resized to ``height``.

    Aspect ratios are kept; images are separated (and framed) by ``padding`` white pixels.
    """
    parts = []
    for image in images:
        x = image.detach().float().cpu()
        x = x.unsqueeze(0) if x.ndim == 3 else x[:1]
        h, w = x.shape[-2:]
        size = (height, max(1, round(w * height / h)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        parts += [torch.ones(3, height, padding), x]
    row = torch.cat([*parts, torch.ones(3, height, padding)], dim=-1)
    return F.pad(row, (0, 0, padding, padding), value=1.0)


def save_outputs(
    run_dir: Path, content: Tensor, style: Tensor, result: Tensor, stem: str = "result"
) -> dict[str, Path]:
    """Write ``{stem}.png`` and ``{stem}_grid.png`` (content | style | result) into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"image": run_dir / f"{stem}.png", "grid": run_dir / f"{stem}_grid.png"}
    save_image(result.detach().float().cpu().clamp(0, 1), paths["image"])
    save_image(side_by_side([content, style, result], height=int(result.shape[-2])), paths["grid"])
    return paths


class CSVLog:
    """Append-only per-step CSV of loss terms (``step, total, perceptual, style, tv``)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.columns = path, list(columns)
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.columns})

    def close(self) -> None:
        self._file.close()


def weights_lines(resolved: ResolvedWeights) -> list[str]:
    """The summary's lines about the backbone weights (loud when random)."""
    lines = [f"backbone weights: {resolved.note}"]
    if resolved.random:
        lines.append(
            "!! RANDOM backbone weights: the result shows the mechanics, NOT a real style transfer "
            "(put torchvision's ImageNet VGG files in the torch hub cache, or pass weights=/path/to/file)"
        )
    return lines
