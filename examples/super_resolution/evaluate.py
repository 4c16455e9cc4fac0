"""Score a trained checkpoint on a folder of HR images and write the SR images.

    python -m examples.super_resolution.evaluate ckpt=outputs/sr/<run>/checkpoints/last.ckpt \\
        input_dir=/data/Set5/HR output_dir=outputs/eval/set5 [weights=auto] [device=cpu]

For each HR image (cut to a multiple of the checkpoint's scale): LR = bicubic downsampling (as in
training), SR = the network. Writes ``{output_dir}/{name}_x{scale}_SR.png``, ``metrics.csv`` (one
row per image: bicubic and model PSNR-Y/SSIM-Y/LPIPS) and ``summary.txt`` (the means), and prints
the summary. Config: ``configs/eval.yaml``. The network is rebuilt from the config saved in the
checkpoint (``hyper_parameters.model``); only ``network.*`` tensors are loaded.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchvision.utils import save_image

from .data import CenterCrops, FolderImages
from .metrics import METRICS, SRMetrics
from .module import METHODS
from .networks import bicubic_upsample
from .train import CONFIG_DIR
from .weights import build_with_weights

logger = logging.getLogger(__name__)


def load_network(ckpt: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, int]:
    """Rebuild the SR network of a training checkpoint; returns ``(network in eval mode, scale)``."""
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    if "model" not in hparams or "scale" not in hparams:
        raise ValueError(
            f"{path} is not a checkpoint of examples.super_resolution.train (no hyper_parameters.model/scale)."
        )
    network: nn.Module = instantiate(hparams["model"], _convert_="all")
    state = {k[len("network.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")}
    network.load_state_dict(state, strict=True)
    return network.eval().to(map_location), int(hparams["scale"])


@torch.no_grad()
def evaluate_folder(
    network: nn.Module, scale: int, input_dir: str | Path, output_dir: str | Path, metrics: SRMetrics
) -> list[dict[str, Any]]:
    """Super-resolve every image of ``input_dir``; write SR PNGs into ``output_dir``; per-image scores."""
    device = next(network.parameters()).device
    images = CenterCrops(FolderImages(input_dir), scale, crop_size=None, min_size=2 * scale + 8)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics.to(device)
    rows = []
    for i in range(len(images)):
        lr, hr, name = images[i]
        lr, hr = lr[None].to(device), hr[None].to(device)
        sr = network(lr).clamp(0, 1)
        save_image(sr[0].cpu(), output_dir / f"{Path(name).stem}_x{scale}_SR.png")
        row: dict[str, Any] = {"image": name, "height": hr.shape[-2], "width": hr.shape[-1]}
        for method, image in (("bicubic", bicubic_upsample(lr, scale).clamp(0, 1)), ("model", sr)):
            row.update({f"{method}_{k}": float(v[0]) for k, v in metrics(image, hr).items()})
        rows.append(row)
        logger.info("%s: %s", name, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return rows


def summarise(rows: list[dict[str, Any]], scale: int, weights_note: str, output_dir: Path) -> str:
    """Mean scores as a table."""
    lines = [f"x{scale} on {len(rows)} image(s); Y channel BT.601, shave {scale}; LPIPS-alex weights: {weights_note}"]
    note = " (RANDOM weights: not perceptual)" if "RANDOM" in weights_note or "random" in weights_note else ""
    lines.append(f"{'method':10s} {'PSNR-Y (dB)':>12s} {'SSIM-Y':>8s} {'LPIPS-alex':>11s}{note}")
    for method in METHODS:
        means = [
            sum(r[f"{method}_{k}"] for r in rows) / len(rows) if f"{method}_{k}" in rows[0] else None for k in METRICS
        ]
        lpips = f"{means[2]:11.4f}" if means[2] is not None else f"{'-':>11s}"
        lines.append(f"{method:10s} {means[0]:12.3f} {means[1]:8.4f} {lpips}")
    lines.append(f"SR images, metrics.csv and summary.txt in {output_dir}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> str:
    """Evaluate ``cfg.ckpt`` on ``cfg.input_dir``; returns the summary table."""
    network, scale = load_network(cfg.ckpt, cfg.device)
    metrics, resolved = build_with_weights(
        lambda w: SRMetrics(scale, lpips_weights=w, lpips=cfg.lpips), cfg.weights, "the LPIPS metric"
    )
    output_dir = Path(cfg.output_dir)
    rows = evaluate_folder(network, scale, cfg.input_dir, output_dir, metrics)
    with open(output_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows, scale, resolved.note if cfg.lpips else "n/a", output_dir)
    (output_dir / "summary.txt").write_text(table + "\n")
    return table


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    print(run(cfg), flush=True)


if __name__ == "__main__":
    main()
