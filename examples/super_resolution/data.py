"""Data for super-resolution: image sources, random HR crops with bicubic LR on the fly.

Sources (each a list of named RGB images):

- :class:`EmbeddedImages`: real photographs bundled with scikit-image (no download), the demo's
  default. Training: ``astronaut``, ``coffee``, ``immunohistochemistry``, ``hubble_deep_field``,
  ``retina``; held out for validation: ``chelsea``, ``rocket``, ``motorcycle`` (the left view of
  ``stereo_motorcycle``). ``colorwheel`` is synthetic and not used.
- :class:`FolderImages`: every image file in a folder (e.g. DIV2K's ``DIV2K_train_HR``, Set5).

Degradation: :func:`bicubic_downsample` (PyTorch bicubic with ``antialias=True``, clamped to
[0, 1]), the usual "BI" setting of SR papers.

Bad data raises :class:`DataError` naming the folder or file: an empty or missing folder, an
unreadable file, an image smaller than the crop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

EMBEDDED_TRAIN = ("astronaut", "coffee", "immunohistochemistry", "hubble_deep_field", "retina")
EMBEDDED_VAL = ("chelsea", "rocket", "motorcycle")
EMBEDDED_ALL = (
    "astronaut",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "chelsea",
    "motorcycle",
    "retina",
)


class DataError(ValueError):
    """Unusable data: empty or missing folder, unreadable file, image too small."""


def bicubic_downsample(hr: Tensor, scale: int) -> Tensor:
    """HR ``(N, 3, H, W)`` or ``(3, H, W)`` in [0, 1] -> LR ``(..., H // scale, W // scale)`` in [0, 1].

    Bicubic with antialiasing (MATLAB ``imresize``-like), clamped to [0, 1]. ``H`` and ``W``
    should be multiples of ``scale`` (the datasets crop them so).
    """
    batched = hr.ndim == 4
    x = hr if batched else hr.unsqueeze(0)
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    lr = F.interpolate(x.float(), size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    return lr if batched else lr.squeeze(0)


def _to_chw_uint8(array: np.ndarray, name: str) -> Tensor:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 -> ``(3, H, W)`` uint8 tensor."""
    if array.dtype != np.uint8:
        raise DataError(f"Image {name} has dtype {array.dtype}; expected 8-bit images.")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise DataError(f"Image {name} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")
    return torch.from_numpy(np.array(array[..., :3], copy=True)).permute(2, 0, 1).contiguous()


class ImageSource(Protocol):
    """A list of named RGB images; ``load(i)`` gives ``(3, H, W)`` uint8."""

    names: list[str]
    sizes: list[tuple[int, int]]  # (H, W)

    def load(self, index: int) -> Tensor: ...

    def describe(self) -> str: ...


class EmbeddedImages:
    """Photographs bundled with scikit-image (read from the package, no download).

    Args:
        names: among :data:`EMBEDDED_ALL` (``motorcycle`` is the left view of ``stereo_motorcycle``).
    """

    def __init__(self, names: Sequence[str] = EMBEDDED_TRAIN) -> None:
        from skimage import data as skdata

        unknown = [n for n in names if n not in EMBEDDED_ALL]
        if unknown or not names:
            raise DataError(f"Unknown embedded image(s) {unknown or '(none given)'}; choose among {EMBEDDED_ALL}.")
        self.names = list(names)
        self._images = []
        for name in self.names:
            array = skdata.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skdata, name)()
            self._images.append(_to_chw_uint8(array, f"skimage.data.{name}"))
        self.sizes = [(int(im.shape[1]), int(im.shape[2])) for im in self._images]

    def load(self, index: int) -> Tensor:
        return self._images[index]

    def describe(self) -> str:
        return "scikit-image: " + ", ".join(f"{n} {h}x{w}" for n, (h, w) in zip(self.names, self.sizes))


class FolderImages:
    """Every image file in ``path`` (non-recursive, sorted), read with Pillow, converted to RGB.

    Headers are read at construction (sizes, readability); pixels on demand, or all at once with
    ``cache=True``.

    Raises:
        DataError: missing folder, no image file in it, or a file Pillow cannot read (named).
    """

    def __init__(self, path: str | Path, cache: bool = False) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise DataError(f"Image folder {str(self.path)!r} does not exist or is not a folder.")
        self.files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise DataError(
                f"Image folder {str(self.path)!r} holds no image file (looked for {', '.join(IMAGE_EXTENSIONS)})."
            )
        self.names = [p.name for p in self.files]
        self.sizes = []
        for file in self.files:
            try:
                with Image.open(file) as image:
                    width, height = image.size
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(f"Cannot read image file {str(file)!r}: {error}") from error
            self.sizes.append((height, width))
        self._cache: dict[int, Tensor] = {}
        if cache:
            for i in range(len(self.files)):
                self._cache[i] = self.load(i)

    def load(self, index: int) -> Tensor:
        if index in self._cache:
            return self._cache[index]
        from PIL import Image

        file = self.files[index]
        try:
            with Image.open(file) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:  # truncated data, bad chunks
            raise DataError(f"Cannot read image file {str(file)!r}: {error}") from error
        return _to_chw_uint8(array, str(file))

    def describe(self) -> str:
        return f"{len(self.files)} image(s) in {self.path}"


def _check_min_size(source: ImageSource, height: int, width: int, what: str, hint: str) -> None:
    for name, (h, w) in zip(source.names, source.sizes):
        if h < height or w < width:
            raise DataError(f"Image {name} is {h}x{w} (HxW), smaller than the {what} {height}x{width}: {hint}")


class RandomCrops(Dataset):
    """Random HR crops (with random flips and 90-degree rotations) and their bicubic LR.

    Item: ``(lr, hr)``, ``lr: (3, crop/scale, crop/scale)``, ``hr: (3, crop, crop)``, float in
    [0, 1]. Each item picks an image uniformly (so a large, flat image such as ``retina`` does
    not dominate), then a crop uniformly inside it. The crop position comes
    from the global torch RNG mixed with the index, so runs are reproducible under a seed, ranks
    of a distributed run (different indices) see different crops, and every epoch differs.

    Args:
        source: the images.
        scale: SR factor.
        crop_size: HR crop side, a multiple of ``scale``.
        length: items per epoch (= steps per epoch x batch size).
        augment: random flips and transposes.
    """

    def __init__(self, source: ImageSource, scale: int, crop_size: int, length: int, augment: bool = True) -> None:
        if crop_size % scale:
            raise ValueError(f"data.crop_size={crop_size} must be a multiple of scale={scale}.")
        _check_min_size(source, crop_size, crop_size, "HR crop", "use a smaller data.crop_size or remove the image.")
        self.source, self.scale, self.crop_size, self.length, self.augment = (
            source,
            scale,
            crop_size,
            int(length),
            augment,
        )
        self.probabilities = torch.full((len(source.names),), 1.0 / len(source.names))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, ())) * 1_000_003 + int(index)
        generator = torch.Generator().manual_seed(seed % (2**63 - 1))
        which = int(torch.multinomial(self.probabilities, 1, generator=generator))
        image = self.source.load(which)
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - self.crop_size + 1, (), generator=generator))
        left = int(torch.randint(0, w - self.crop_size + 1, (), generator=generator))
        hr = image[:, top : top + self.crop_size, left : left + self.crop_size].float().div_(255)
        if self.augment:
            flips = torch.randint(0, 2, (3,), generator=generator).tolist()
            if flips[0]:
                hr = hr.flip(-1)
            if flips[1]:
                hr = hr.flip(-2)
            if flips[2]:
                hr = hr.transpose(-1, -2)
            hr = hr.contiguous()
        return bicubic_downsample(hr, self.scale), hr


class CenterCrops(Dataset):
    """Deterministic validation items: a centre crop (or the whole image), cut to a multiple of scale.

    Item: ``(lr, hr, name)``, ``hr: (3, H, W)`` with ``H, W`` multiples of ``scale`` and at most
    ``crop_size`` (``None``: the whole image), ``lr: (3, H/scale, W/scale)``.
    """

    def __init__(self, source: ImageSource, scale: int, crop_size: int | None = None, min_size: int = 16) -> None:
        self.source, self.scale, self.crop_size = source, scale, crop_size
        _check_min_size(source, min_size, min_size, "smallest validation size", "remove the image.")

    def __len__(self) -> int:
        return len(self.source.names)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str]:
        image = self.source.load(index)
        h, w = image.shape[-2:]
        ch, cw = (h, w) if self.crop_size is None else (min(h, self.crop_size), min(w, self.crop_size))
        ch, cw = ch - ch % self.scale, cw - cw % self.scale
        top, left = (h - ch) // 2, (w - cw) // 2
        hr = image[:, top : top + ch, left : left + cw].float().div_(255)
        return bicubic_downsample(hr, self.scale), hr, self.source.names[index]


class SRDataModule(L.LightningDataModule):
    """Training crops and validation images for ``scale``-times super-resolution.

    Args:
        train: source of training images (``EmbeddedImages``, ``FolderImages``, ...).
        val: source of held-out validation images.
        scale: SR factor (2, 3, 4).
        crop_size: HR training crop side (a multiple of ``scale``).
        batch_size: training batch size (validation uses 1: images may differ in size).
        steps_per_epoch: training batches per epoch.
        val_crop: validation centre-crop side, ``None`` for whole images.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        train: ImageSource,
        val: ImageSource,
        scale: int = 2,
        crop_size: int = 64,
        batch_size: int = 8,
        steps_per_epoch: int = 100,
        val_crop: int | None = 256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_source, self.val_source = train, val
        self.scale, self.crop_size, self.batch_size = int(scale), int(crop_size), int(batch_size)
        self.steps_per_epoch, self.val_crop, self.num_workers = int(steps_per_epoch), val_crop, int(num_workers)
        # Build (and check) the datasets now: bad data fails before any model is built.
        self.train_set = RandomCrops(train, self.scale, self.crop_size, self.steps_per_epoch * self.batch_size)
        self.val_set = CenterCrops(val, self.scale, val_crop)

    def describe(self) -> str:
        return f"train: {self.train_source.describe()}; val: {self.val_source.describe()}"

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=self.num_workers)
