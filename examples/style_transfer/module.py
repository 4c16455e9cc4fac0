"""LightningModule of the feed-forward (Johnson et al.) style transfer."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from perceptual_loss import CombinedLoss


class FastStyleModule(L.LightningModule):
    """Train ``network`` so that ``network(x)`` keeps ``x``'s content and takes ``style``'s style.

    The style image's Gram matrices are cached once in ``criterion`` (``set_target(style,
    terms=["style"])``); each step compares the output's features with the input batch's
    (content) and its Grams with the cached ones, plus total variation.
    """

    def __init__(self, network: nn.Module, criterion: CombinedLoss, style: Tensor, lr: float = 1e-3) -> None:
        super().__init__()
        self.network, self.criterion, self.lr = network, criterion, float(lr)
        self.criterion.set_target(style, terms=["style"])
        self.losses: list[float] = []  # total loss per training step (for the summary and tests)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        pred = self.network(batch)
        total, parts = self.criterion(pred, batch)  # style cached; the batch is the content target
        self.log("train/total", total, prog_bar=True)
        for name, value in parts.items():
            self.log(f"train/{'content' if name == 'perceptual' else name}", value, prog_bar=name != "tv")
        self.losses.append(float(total.detach()))
        return total

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.lr)
