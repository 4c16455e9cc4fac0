"""Training photos for the feed-forward network: random crops of scikit-image photographs."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .common import SKIMAGE_PREFIX, load_image

DEFAULT_TRAIN = ("astronaut", "coffee", "rocket", "motorcycle", "retina")
"""Default training photos (``chelsea`` is held out: the network is applied to it at the end)."""


class RandomCrops(Dataset):
    """``length`` random ``crop_size`` crops (with horizontal flips) of ``images``.

    Each image is first resized so its shorter side is ``resize`` (so crops see whole objects at
    roughly the scale the network is applied at). Item: ``(3, crop, crop)`` float in [0, 1].
    """

    def __init__(
        self, images: Sequence[str], crop_size: int, length: int, resize: int | None = 256, seed: int = 0
    ) -> None:
        if not images:
            raise ValueError("data.images is empty: give at least one skimage:<name> or image path.")
        sources = [name if (":" in name or "/" in name or "." in name) else SKIMAGE_PREFIX + name for name in images]
        self.images = [load_image(s, resize)[0] for s in sources]
        small = [s for s, im in zip(sources, self.images) if min(im.shape[-2:]) < crop_size]
        if small:
            raise ValueError(
                f"Images smaller than data.crop_size={crop_size}: {small}; lower data.crop_size or raise data.resize."
            )
        self.names, self.crop_size, self.length, self.seed = sources, int(crop_size), int(length), int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = self.images[int(torch.randint(len(self.images), (), generator=generator))]
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - self.crop_size + 1, (), generator=generator))
        left = int(torch.randint(0, w - self.crop_size + 1, (), generator=generator))
        crop = image[:, top : top + self.crop_size, left : left + self.crop_size]
        if torch.rand((), generator=generator) < 0.5:
            crop = crop.flip(-1)
        return crop.contiguous()


class CropsDataModule(L.LightningDataModule):
    """Training crops only (the style-transfer loss needs no validation set)."""

    def __init__(
        self, images: Sequence[str] = DEFAULT_TRAIN, crop_size: int = 96, batch_size: int = 4, steps: int = 200,
        resize: int | None = 256, num_workers: int = 0, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.train_set = RandomCrops(list(images), crop_size, int(steps) * self.batch_size, resize, seed)

    def describe(self) -> str:
        return f"{len(self.train_set.names)} photos ({', '.join(self.train_set.names)}), {self.train_set.crop_size} px crops"

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers, drop_last=True
        )
