"""A plain LightningModule holding any of our losses trains without Lightning's eval-mode warning.

Lightning warns about every module in eval mode at the start of training. Our frozen networks
compute the same in both modes, so their flags follow the parent and there is nothing to warn
about, without any warning filter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss

L = pytest.importorskip("lightning")

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "perceptual": lambda: PerceptualLoss(["relu2_2"]),
    "style": lambda: StyleLoss(["relu1_2"]),
    "lpips": lambda: LPIPSLoss(),
    "dists": lambda: DISTSLoss(weights=None),
    "perceptual-resnet18": lambda: PerceptualLoss(["layer1", "logits"], backbone="resnet18"),
    "combined": lambda: CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"]}, lpips={"net": "squeeze"}),
}


class Restorer(L.LightningModule):
    """What users write: a network, a loss in ``__init__``, the loss in ``training_step``."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.net = nn.Conv2d(3, 3, 3, padding=1)
        self.loss = loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        low, high = batch
        value = self.loss(self.net(low).clamp(0, 1), high)
        return value.total if hasattr(value, "total") else value

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=1e-3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_training_raises_no_eval_mode_warning(name: str, tmp_path) -> None:
    images = torch.rand(4, 3, 64, 64)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, images.flip(-1)), batch_size=2)
    module = Restorer(LOSSES[name]())
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "eval mode" in m], messages
    assert trainer.global_step == 2
