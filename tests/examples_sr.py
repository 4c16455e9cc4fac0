"""Helpers for the super-resolution example's tests (tests/test_sr_*.py): config composition,
tiny overrides, and a callback that saves each rank's final weights in a distributed run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("lightning")  # the example's extra dependencies: pip install -e '.[examples]'
pytest.importorskip("hydra")

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from examples.super_resolution.train import CONFIG_DIR

REPO = Path(CONFIG_DIR).parent

TINY = [
    "data.crop_size=32",
    "data.batch_size=2",
    "data.steps_per_epoch=2",
    "data.val_crop=48",
    "data.val.names=[chelsea]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "outputs.grids=1",
    "loss.weights=imagenet",  # conftest's random "ImageNet" files: strict path, no download
]
"""Overrides that make any training config run in a second or two."""


def compose_config(overrides: Sequence[str] = (), name: str = "train") -> DictConfig:
    """Compose ``configs/{name}.yaml`` with ``overrides`` as the command line would."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A random RGB PNG (smooth enough that SR is meaningful)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path)
    return path


class SaveRankWeights(L.Callback):
    """At the end of training, save ``rank{global_rank}.pt``: the SR network's state dict and the
    first frozen backbone tensor of the loss (which DDP must have made equal across ranks)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        frozen = next(pl_module.criterion.extractors.values().__iter__()).layers[0].weight
        torch.save(
            {
                "network": {k: v.detach().cpu().clone() for k, v in pl_module.network.state_dict().items()},
                "frozen": frozen.detach().cpu().clone(),
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
            },
            self.directory / f"rank{trainer.global_rank}.pt",
        )
