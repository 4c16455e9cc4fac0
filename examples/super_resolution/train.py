"""Train a super-resolution network with Lightning and Hydra; print bicubic vs model.

    python -m examples.super_resolution.train                       # the demo: ESPCN x2, L1 + VGG, embedded photos
    python -m examples.super_resolution.train experiment=sr_gan     # ESRGAN-style
    python -m examples.super_resolution.train -m loss=l1,perceptual # a sweep
    python -m examples.super_resolution.train ckpt_path=outputs/sr/<run>/checkpoints/last.ckpt trainer.max_epochs=6

Configs live in ``configs/`` (``train.yaml`` and its groups). Everything a run writes goes to its
Hydra run dir (``outputs/sr/<time>/``): ``grids/`` (bicubic | SR | HR PNGs per epoch),
``csv/metrics.csv``, ``checkpoints/{last,best}.ckpt``, ``summary.txt`` (the final table) and
``.hydra/`` (the composed config). :func:`run` is the same thing without Hydra's runtime (tests
compose a config and call it).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

from perceptual_loss import CombinedLoss, LPIPSLoss

from .callbacks import SaveValidationGrids
from .data import SRDataModule
from .metrics import METRICS, SRMetrics
from .module import METHODS, SRModule
from .networks import count_parameters
from .weights import RANDOM_NOTE, ResolvedWeights, build_with_weights

logger = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


@dataclass
class RunResult:
    """What a training run produced (also written to ``summary.json``)."""

    run_dir: str
    metrics: dict[str, float]  # "{bicubic,model}_{psnr,ssim,lpips}"
    loss_weights: str
    lpips_weights: str
    random_weights: bool
    steps: int
    seconds: float
    description: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    table: str = ""
    global_zero: bool = True  # False in the other processes of a distributed run


def build_criterion(loss_cfg: DictConfig) -> tuple[CombinedLoss, ResolvedWeights]:
    """Instantiate the loss config, resolving its ``weights`` choice (auto | imagenet | none | path)."""
    choice = loss_cfg.get("weights", "auto")
    factory = instantiate(loss_cfg, _partial_=True, _convert_="all")  # raises the library's own errors when called
    return build_with_weights(lambda w: factory(weights=w), choice, "the training loss")


def build_metrics(cfg: DictConfig) -> tuple[SRMetrics, ResolvedWeights]:
    """Validation metrics; the LPIPS backbone follows ``metrics.lpips_weights``."""
    return build_with_weights(
        lambda w: SRMetrics(
            cfg.scale, lpips_weights=w, lpips=cfg.metrics.lpips, lpips_net=cfg.metrics.get("lpips_net", "alex")
        ),
        cfg.metrics.lpips_weights,
        "the LPIPS metric",
    )


def build_module(cfg: DictConfig) -> tuple[SRModule, ResolvedWeights, ResolvedWeights]:
    """The LightningModule of a config, and how the loss and LPIPS weights were resolved."""
    network = instantiate(cfg.model, _convert_="all")
    criterion, loss_weights = build_criterion(cfg.loss)
    metrics, lpips_weights = build_metrics(cfg)
    discriminator = instantiate(cfg.discriminator, _convert_="all") if cfg.get("discriminator") else None
    hparams = {"model": OmegaConf.to_container(cfg.model, resolve=True), "scale": int(cfg.scale)}
    module = SRModule(
        network, criterion, metrics, cfg.scale, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
        min_lr_ratio=cfg.optim.min_lr_ratio, discriminator=discriminator, d_lr=cfg.gan.d_lr, hparams=hparams,
    )  # fmt: skip
    return module, loss_weights, lpips_weights


def _loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if cfg.outputs.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    return loggers


def _weights_line(
    loss_weights: ResolvedWeights, lpips_weights: ResolvedWeights, criterion: CombinedLoss, lpips: bool
) -> str:
    loss_note = loss_weights.note if len(criterion.extractors) else "none needed (no backbone term)"
    line = f"backbone weights: loss {loss_note}"
    if lpips:
        line += f"; LPIPS metric {lpips_weights.note}"
    return line


def format_table(result: RunResult) -> str:
    """The final table: bicubic vs model, PSNR/SSIM/LPIPS, and where the outputs went."""
    d = result.description
    lpips_note = (
        " (RANDOM weights: not perceptual)"
        if "RANDOM" in result.lpips_weights or "random" in result.lpips_weights
        else ""
    )
    lines = [
        f"Super-resolution x{d['scale']} | {d['model']} | loss: {d['loss']} | {result.steps} steps in {result.seconds:.0f} s",
        d["weights"],
    ]
    if result.random_weights:
        lines.append(
            f"!! backbone weights: {RANDOM_NOTE}: perceptual/LPIPS numbers show mechanics, not perceptual quality"
        )
    lines += [
        f"validation: {d['val']} (Y channel BT.601, shave {d['scale']})",
        f"{'method':10s} {'PSNR-Y (dB)':>12s} {'SSIM-Y':>8s} {'LPIPS-' + d.get('lpips_net', 'alex'):>11s}{lpips_note}",
    ]
    for method in METHODS:
        values = [result.metrics.get(f"{method}_{k}") for k in METRICS]
        cells = [
            f"{values[0]:12.3f}",
            f"{values[1]:8.4f}",
            f"{values[2]:11.4f}" if values[2] is not None else f"{'-':>11s}",
        ]
        lines.append(f"{method:10s} {' '.join(cells)}")
    lines.append(f"outputs: {result.run_dir}")
    lines += [f"  {name:12s} {path}" for name, path in result.files.items()]
    return "\n".join(lines)


def run(cfg: DictConfig, run_dir: str | Path) -> RunResult:
    """Train (or resume, ``cfg.ckpt_path``), validate, write ``summary.txt``/``summary.json`` into ``run_dir``."""
    run_dir = Path(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: SRDataModule = instantiate(cfg.data, _convert_="all")
    if datamodule.scale != int(cfg.scale):
        raise ValueError(f"data.scale={datamodule.scale} differs from scale={cfg.scale}; set scale=... only.")
    module, loss_weights, lpips_weights = build_module(cfg)
    heatmaps = (
        LPIPSLoss(
            net=module.metrics.lpips_net, spatial=True, reduction="none", weights=lpips_weights.arg, check_inputs=False
        )
        if cfg.outputs.get("heatmaps")
        else None
    )
    grids = SaveValidationGrids(run_dir / "grids", max_images=cfg.outputs.grids, heatmaps=heatmaps)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val/model_psnr", mode="max", save_last=True, save_top_k=1,
        auto_insert_metric_name=False,
    )  # fmt: skip
    extra: list[Callback] = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values()]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=_loggers(cfg, run_dir),
        callbacks=[grids, checkpoints, *extra],
        default_root_dir=str(run_dir),
    )
    logger.info("data: %s", datamodule.describe())
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    seconds = time.perf_counter() - start
    if module.last_val_step != trainer.global_step or not trainer.callback_metrics:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k[len("val/") :]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    criterion = module.criterion
    network = module.network
    loss_terms = ", ".join(
        [f"{k}={w:g}" for k, w in criterion.pixel_weights.items()]
        + [f"{k}={w:g}" for k, w in criterion.term_weights.items()]
    )
    if criterion.adversarial:
        loss_terms += f", adversarial={criterion.adversarial['weight']:g} ({criterion.adversarial['kind']})"
    val_crop = cfg.data.get("val_crop")
    random_weights = (loss_weights.random and len(criterion.extractors) > 0) or (
        lpips_weights.random and bool(cfg.metrics.lpips)
    )
    result = RunResult(
        run_dir=str(run_dir),
        metrics=metrics,
        loss_weights=loss_weights.note,
        lpips_weights=lpips_weights.note if cfg.metrics.lpips else "n/a",
        random_weights=random_weights,
        steps=int(trainer.global_step),
        seconds=seconds,
        description={
            "scale": str(cfg.scale),
            "model": f"{type(network).__name__} ({count_parameters(network) / 1e3:.1f}k params)",
            "loss": loss_terms,
            "lpips_net": str(cfg.metrics.get("lpips_net", "alex")),
            "weights": _weights_line(loss_weights, lpips_weights, criterion, bool(cfg.metrics.lpips)),
            "val": f"{', '.join(datamodule.val_source.names)}"
            + (f" ({val_crop}x{val_crop} centre crops)" if val_crop else " (whole images)"),
        },
        files={
            "grids": f"{run_dir / 'grids'} (bicubic | SR | HR per image per epoch)",
            "metrics CSV": str(run_dir / "csv" / "metrics.csv")
            if not cfg.trainer.get("fast_dev_run")
            else "(none: fast_dev_run)",
            "checkpoints": str(run_dir / "checkpoints"),
            "summary": str(run_dir / "summary.txt"),
        },
    )
    result.table = format_table(result)
    result.global_zero = trainer.is_global_zero
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.txt").write_text(result.table + "\n")
        (run_dir / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the model's validation PSNR (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    result = run(cfg, HydraConfig.get().runtime.output_dir)
    if result.global_zero:
        print("\n" + result.table, flush=True)
    return result.metrics.get("model_psnr")


if __name__ == "__main__":
    main()
