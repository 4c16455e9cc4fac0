"""Lightning callbacks of the SR example: side-by-side validation grids and LPIPS heat-maps."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchvision.utils import make_grid, save_image

logger = logging.getLogger(__name__)


def side_by_side(bicubic: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Three ``(3, H, W)`` images in [0, 1] -> one ``(3, H + 2p, 3W + 4p)`` grid: bicubic | SR | HR."""
    return make_grid(torch.stack([bicubic, sr, hr]).clamp(0, 1).float().cpu(), nrow=3, padding=padding, pad_value=1.0)


def heat_colours(heat: torch.Tensor) -> torch.Tensor:
    """A ``(H, W)`` map -> ``(3, H, W)`` black-red-yellow-white image, scaled by its maximum."""
    v = (heat / heat.max().clamp_min(1e-12)).clamp(0, 1)
    return torch.stack([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "image"


class SaveValidationGrids(L.Callback):
    """Save ``bicubic | SR | HR`` PNGs of the first ``max_images`` validation images each epoch.

    Files: ``{directory}/epoch{E:03d}_{image name}.png`` (global rank 0 only; not during the
    sanity check). Needs ``validation_step`` to return ``{"bicubic", "sr", "hr", "names"}`` batches.
    With ``heatmaps``, also ``..._lpips.png``: where SR differs from HR, as the per-pixel map of
    a spatial LPIPS (its mean is the image's LPIPS), scaled to its own maximum.

    Args:
        directory: where the PNGs go (created).
        max_images: how many validation images per epoch.
        heatmaps: a loss with ``spatial=True, reduction="none"`` (e.g. ``LPIPSLoss``), or ``None``.
    """

    def __init__(self, directory: str | Path, max_images: int = 4, heatmaps: nn.Module | None = None) -> None:
        self.directory, self.max_images = Path(directory), int(max_images)
        self.heatmaps = heatmaps
        self.saved: list[Path] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(outputs, dict):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for i in range(outputs["hr"].shape[0]):
            index = batch_idx * outputs["hr"].shape[0] + i
            if index >= self.max_images:
                return
            path = self.directory / f"epoch{trainer.current_epoch:03d}_{_safe(outputs['names'][i])}.png"
            save_image(side_by_side(outputs["bicubic"][i], outputs["sr"][i], outputs["hr"][i]), path)
            self.saved.append(path)
            if self.heatmaps is not None:
                sr, hr = outputs["sr"][i : i + 1].clamp(0, 1), outputs["hr"][i : i + 1]
                with torch.no_grad():
                    heat = self.heatmaps.to(hr.device)(sr.to(hr.dtype), hr)[0, 0].float().cpu()
                heat_path = path.with_name(f"{path.stem}_lpips.png")
                save_image(heat_colours(heat), heat_path)
                self.saved.append(heat_path)
