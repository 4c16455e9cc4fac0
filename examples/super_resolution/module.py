"""``SRModule``: the LightningModule training an SR network with ``perceptual_loss.CombinedLoss``.

Two modes:

- **regression** (``discriminator=None``): automatic optimisation, Adam on the network, the loss
  is ``CombinedLoss(sr, hr)`` (e.g. L1 + perceptual).
- **GAN** (SRGAN/ESRGAN style, ``discriminator`` given): manual optimisation with two Adam
  optimisers. Generator step: ``CombinedLoss(sr, hr, fake_logits=D(sr), real_logits=D(hr).detach(),
  step=g_step)`` (the adversarial term is part of the criterion, with its ``start_step`` warm-up);
  discriminator step: :func:`perceptual_loss.discriminator_loss` on ``D(hr)``, ``D(sr.detach())``,
  skipped during the warm-up. Lightning's ``global_step`` counts both optimisers' steps; the
  generator's own count is the ``generator_steps`` buffer (saved, so resuming keeps the warm-up).

Validation (batch size 1): for each image, bicubic upsampling and the network are scored against
HR with :class:`~examples.super_resolution.metrics.SRMetrics`; the means are logged as
``val/{bicubic,model}_{psnr,ssim,lpips}``, and ``validation_step`` returns the three images for
:class:`~examples.super_resolution.callbacks.SaveValidationGrids`.

Checkpoints hold the network, the discriminator (GAN), their optimisers and ``hyper_parameters``
(the network's config, to rebuild it in ``evaluate``); never the frozen loss or LPIPS backbones
(the library keeps them out of ``state_dict``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from perceptual_loss import CombinedLoss, discriminator_loss

from .metrics import METRICS, SRMetrics
from .networks import bicubic_upsample

logger = logging.getLogger(__name__)

METHODS = ("bicubic", "model")


class SRModule(L.LightningModule):
    """Train ``network`` (LR -> SR) with ``criterion``; optionally adversarially against ``discriminator``.

    Args:
        network: LR ``(N, 3, h, w)`` -> SR ``(N, 3, scale*h, scale*w)`` (see ``networks.py``).
        criterion: the training loss; returns ``(total, parts)``.
        metrics: validation metrics (PSNR-Y, SSIM-Y, LPIPS).
        scale: SR factor.
        lr: Adam learning rate of the network (cosine-annealed to ``lr * min_lr_ratio`` over the run).
        betas: Adam betas.
        min_lr_ratio: final/initial learning rate.
        discriminator: enables GAN mode (see module doc).
        d_lr: discriminator learning rate.
        hparams: plain-data config stored in checkpoints (``{"model": <network config>, "scale": s}``).
    """

    def __init__(
        self,
        network: nn.Module,
        criterion: CombinedLoss,
        metrics: SRMetrics,
        scale: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        min_lr_ratio: float = 0.1,
        discriminator: nn.Module | None = None,
        d_lr: float = 1e-4,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.network, self.criterion, self.metrics, self.discriminator = network, criterion, metrics, discriminator
        self.scale, self.lr, self.betas, self.min_lr_ratio, self.d_lr = (
            int(scale),
            float(lr),
            tuple(betas),
            float(min_lr_ratio),
            float(d_lr),
        )
        if (discriminator is None) != (criterion.adversarial is None):
            raise ValueError(
                "A GAN run needs both a discriminator and a loss with an adversarial term (experiment=sr_gan); "
                f"got discriminator={'yes' if discriminator is not None else 'none'} and "
                f"loss adversarial={'yes' if criterion.adversarial is not None else 'none'}."
            )
        self.automatic_optimization = discriminator is None
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self.save_hyperparameters(dict(hparams or {}))
        self.val_means = nn.ModuleDict({f"{m}_{k}": MeanMetric() for m in METHODS for k in METRICS})
        self.last_val_step = -1  # global step of the last validation (not the sanity check)

    def forward(self, lr: Tensor) -> Tensor:
        """LR ``(N, 3, h, w)`` -> SR ``(N, 3, scale*h, scale*w)`` clamped to [0, 1]."""
        return self.network(lr).clamp(0, 1)

    # ------------------------------------------------------------------ optimisation

    def _cosine(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        # Training batches of the run (in GAN mode: generator steps; set the run's length with
        # trainer.max_epochs there, as trainer.max_steps counts both optimisers' steps).
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        base = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=base * self.min_lr_ratio)

    def configure_optimizers(self) -> Any:
        g_opt = torch.optim.Adam(self.network.parameters(), lr=self.lr, betas=self.betas)
        g_sched = {"scheduler": self._cosine(g_opt), "interval": "step"}
        if self.discriminator is None:
            return {"optimizer": g_opt, "lr_scheduler": g_sched}
        d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr, betas=self.betas)
        return [g_opt, d_opt], [g_sched]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        lr, hr = batch
        if self.discriminator is not None:
            self._gan_step(lr, hr)
            return None
        total, parts = self.criterion(self.network(lr), hr)
        self._log_train(total, parts, lr.shape[0])
        return total

    def _gan_step(self, lr: Tensor, hr: Tensor) -> None:
        assert self.discriminator is not None
        g_opt, d_opt = self.optimizers()  # type: ignore[misc]
        step = int(self.generator_steps)
        adversarial = self.criterion.adversarial_active(step)
        sr = self.network(lr)
        # Generator step; toggle_optimizer freezes the discriminator's parameters meanwhile.
        self.toggle_optimizer(g_opt)
        if adversarial:
            fake_logits, real_logits = self.discriminator(sr), self.discriminator(hr).detach()
            total, parts = self.criterion(sr, hr, fake_logits=fake_logits, real_logits=real_logits, step=step)
        else:
            total, parts = self.criterion(sr, hr, step=step)
        g_opt.zero_grad()
        self.manual_backward(total)
        g_opt.step()
        self.lr_schedulers().step()  # type: ignore[union-attr]
        self.untoggle_optimizer(g_opt)
        self.generator_steps += 1
        if adversarial:  # Discriminator: real vs the (detached) generated images.
            self.toggle_optimizer(d_opt)
            d_loss = discriminator_loss(
                self.discriminator(hr), self.discriminator(sr.detach()), self.criterion.adversarial["kind"]
            )
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            d_opt.step()
            self.untoggle_optimizer(d_opt)
            self.log("train/discriminator", d_loss.detach(), batch_size=lr.shape[0])
        self._log_train(total, parts, lr.shape[0])

    def _log_train(self, total: Tensor, parts: Mapping[str, Tensor], batch_size: int) -> None:
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=batch_size)

    # ------------------------------------------------------------------ validation

    def validation_step(self, batch: tuple[Tensor, Tensor, Any], batch_idx: int) -> dict[str, Any]:
        lr, hr, names = batch
        images = {"bicubic": bicubic_upsample(lr, self.scale).clamp(0, 1), "model": self(lr)}
        for method, image in images.items():
            for key, values in self.metrics(image, hr).items():
                self.val_means[f"{method}_{key}"].update(values)
        return {"bicubic": images["bicubic"], "sr": images["model"], "hr": hr, "names": list(names)}

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step
        for key, metric in self.val_means.items():
            if metric.update_called:
                self.log(f"val/{key}", metric.compute(), sync_dist=False)  # MeanMetric syncs across ranks itself
            metric.reset()
