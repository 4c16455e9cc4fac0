"""Johnson et al. (2016): train a feed-forward network for one style, then apply it to a held-out photo.

    python -m examples.style_transfer.train                                  # defaults (configs/fast_style_transfer.yaml)
    python -m examples.style_transfer.train style=my_style.jpg trainer.max_steps=2000 trainer=gpu
    python -m examples.style_transfer.train -m loss.style_weight=1e4,1e5      # a sweep

Trains on random crops of scikit-image photographs (``chelsea`` held out), with content (VGG16
relu2_2) + style (relu1_2, relu2_2, relu3_3, relu4_3 Grams of the cached style image) + TV loss.
Outputs go to the Hydra run dir (``outputs/fast_style_transfer/<time>/``): ``result.png`` and
``result_grid.png`` (held-out photo | style | result), ``csv/metrics.csv`` (Lightning CSVLogger),
``network.pt`` (the trained network's state dict), ``summary.txt``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from .common import CONFIG_DIR, build_criterion, load_image, save_outputs, weights_lines
from .data import CropsDataModule
from .module import FastStyleModule

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a feed-forward training run produced."""

    run_dir: str
    losses: list[float]  # total loss per training step
    steps: int
    weights: str
    random_weights: bool
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def run(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    """Train, apply to ``cfg.apply_to``, write outputs and ``summary.txt`` into ``run_dir``."""
    run_dir = Path(run_dir)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    style = load_image(cfg.style, cfg.style_size)
    held_out = load_image(cfg.apply_to, cfg.apply_size)
    datamodule: CropsDataModule = instantiate(cfg.data, _convert_="all")
    network = instantiate(cfg.model, _convert_="all")
    criterion, resolved = build_criterion(cfg.loss, cfg.weights)
    module = FastStyleModule(network, criterion, style, lr=cfg.optim.lr)
    fast = bool(cfg.trainer.get("fast_dev_run"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, logger=CSVLogger(save_dir=str(run_dir), name="csv", version=""), default_root_dir=str(run_dir),
        enable_checkpointing=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start

    network.eval()
    with torch.no_grad():
        result = network(held_out)
    files = {k: str(v) for k, v in save_outputs(run_dir, held_out[0], style[0], result[0]).items()}
    torch.save(network.state_dict(), run_dir / "network.pt")
    files["network"] = str(run_dir / "network.pt")
    files["metrics"] = str(run_dir / "csv" / "metrics.csv") if not fast else "(none: fast_dev_run)"
    files["summary"] = str(run_dir / "summary.txt")
    losses = module.losses
    params = sum(p.numel() for p in network.parameters())
    k = max(1, min(10, len(losses) // 4))
    lines = [
        (
            f"Style transfer (Johnson, feed-forward) | {type(network).__name__} ({params / 1e3:.1f}k params) | "
            f"{trainer.global_step} steps in {seconds:.0f} s"
        ),
        f"style: {cfg.style} -> {tuple(style.shape[-2:])}; training data: {datamodule.describe()}; applied to {cfg.apply_to}",
        f"loss: {criterion.extra_repr()} | {cfg.loss.backbone} content {list(cfg.loss.content_layers)} style {list(cfg.loss.style_layers)}",
        *weights_lines(resolved),
        f"total loss (mean of first/last {k} steps): {sum(losses[:k]) / k:.4g} -> {sum(losses[-k:]) / k:.4g}"
        if losses
        else "no steps",
        f"outputs: {run_dir}",
        *(f"  {name:8s} {path}" for name, path in files.items()),
    ]
    summary = "\n".join(lines)
    (run_dir / "summary.txt").write_text(summary + "\n")
    return TrainResult(
        str(run_dir), list(losses), int(trainer.global_step), resolved.note, resolved.random, seconds, files, summary
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="fast_style_transfer")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the mean total loss of the last steps (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    result = run(cfg, HydraConfig.get().runtime.output_dir)
    print("\n" + result.summary, flush=True)
    tail = result.losses[-10:]
    return sum(tail) / len(tail) if tail else None


if __name__ == "__main__":
    main()
