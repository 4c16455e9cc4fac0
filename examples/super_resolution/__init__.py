"""Super-resolution example: Lightning + Hydra training with ``perceptual_loss.CombinedLoss``.

Modules: ``networks`` (ESPCN, EDSR, discriminator), ``data`` (sources, crops, DataModule),
``metrics`` (PSNR/SSIM on Y, LPIPS), ``weights`` (the demo's ``weights=auto``), ``module``
(the LightningModule), ``callbacks`` (validation grids), ``train`` and ``evaluate`` (entry points).
See README.md in this folder.
"""
