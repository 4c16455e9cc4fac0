"""Decoding image files to pixels, and pixels to float batches on the scoring device."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_DECODE_WORKERS = 8
"""Default cap on decoding threads (PNG and JPEG decoders release the GIL, so threads scale)."""
Resize = Literal["bicubic"] | None
Loaded = tuple[str, Tensor, Tensor]
"""A pair's name and its two images as :func:`read_image` gives them, ``(H, W, 3)``."""


def read_image(path: Path, frames: list[int] | None = None) -> Tensor:
    """Decode an image file to ``(H, W, 3)`` RGB, as stored: no conversion to float yet.

    Returns ``uint8`` in ``[0, 255]`` for 8-bit files (grayscale and palette converted to RGB,
    alpha dropped), or ``float32`` in ``[0, 1]`` for 16-bit grayscale. :func:`to_unit_batch`
    turns a list of them into a float batch in one pass. Any format Pillow decodes; of an
    animation (GIF, APNG, WebP, multi-page TIFF) the first frame, its frame count appended to
    ``frames`` when given.

    Raises:
        OSError: unreadable or corrupt file (the message names it).
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            if frames is not None:
                frames.append(getattr(image, "n_frames", 1))
            image.seek(0)
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale
                array = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 65535.0
                return array.clamp(0, 1)[:, :, None].expand(-1, -1, 3)
            return torch.from_numpy(np.array(image.convert("RGB")))
    except Exception as error:
        raise OSError(f"cannot read image {path}: {error}") from error


def to_unit_batch(images: Sequence[Tensor], device: str | torch.device = "cpu") -> Tensor:
    """Stack :func:`read_image` outputs of one size into ``(N, 3, H, W)`` float32 in ``[0, 1]``.

    The result is in ``torch.channels_last`` memory (the decoder's pixel order, which the
    backbones use anyway). 8-bit images travel to ``device`` as bytes and become floats there:
    ``value / 255``, the same numbers as converting each image on its own. For a CUDA device the
    bytes are stacked into page-locked memory and copied without blocking the host.
    """
    device = torch.device(device)
    if all(image.dtype == torch.uint8 for image in images):
        batch = _stack(images, device)
        return batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    floats = [image.float().div_(255.0) if image.dtype == torch.uint8 else image.float() for image in images]
    return _stack(floats, device).to(device, non_blocking=True).permute(0, 3, 1, 2)


def _stack(images: Sequence[Tensor], device: torch.device) -> Tensor:
    if device.type != "cuda":
        return torch.stack(list(images))
    out = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=True)
    return torch.stack(list(images), out=out)


def load_image(path: Path) -> Tensor:
    """``(3, H, W)`` float32 RGB in ``[0, 1]``: :func:`read_image`, then :func:`to_unit_batch`.

    Raises:
        OSError: unreadable or corrupt file (the message names it).
    """
    return to_unit_batch([read_image(path)])[0]


def image_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header, or ``None`` when it cannot be read (reported later)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception:
        return None


def default_workers(processes: int = 1) -> int:
    """Decoding threads: this process's share of the CPU cores it may use, at most :data:`MAX_DECODE_WORKERS`.

    Args:
        processes: evaluator processes sharing the machine (torchrun's ``LOCAL_WORLD_SIZE``).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) // max(1, processes), MAX_DECODE_WORKERS))


def decode_pair(
    name: str, first: Path, second: Path, resize: Resize, notes: dict[str, str] | None = None
) -> Loaded | tuple[str, str]:
    """``(name, image, reference)`` as :func:`read_image` gives them, or ``(name, reason)``;
    ``notes[name]`` says when an animation's first frame was taken."""
    frames: list[int] = []
    try:
        a, b = read_image(first / name, frames), read_image(second / name, frames)
    except OSError as error:
        return name, str(error)
    if notes is not None and max(frames) > 1:
        notes[name] = "first frame of " + " and ".join(f"{count}" for count in frames) + " frames"
    if a.shape != b.shape:
        if resize is None:
            return name, f"size mismatch: {a.shape[0]}x{a.shape[1]} vs {b.shape[0]}x{b.shape[1]} (use --resize bicubic)"
        resized = F.interpolate(to_unit_batch([b]), a.shape[:2], mode="bicubic", antialias=True, align_corners=False)
        b = resized.clamp(0, 1)[0].permute(1, 2, 0)  # (H, W, 3) float in [0, 1], as read_image gives
    return name, a, b
