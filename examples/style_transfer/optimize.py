"""Gatys et al. (2016): optimise the image itself so its VGG features match a content image and
its Gram matrices match a style image.

    python -m examples.style_transfer.optimize                                   # defaults (configs/style_transfer.yaml)
    python -m examples.style_transfer.optimize content=me.jpg style=starry.jpg image_size=256 steps=300
    python -m examples.style_transfer.optimize optim.name=lbfgs optim.lr=1 init=noise
    python -m examples.style_transfer.optimize -m loss.style_weight=1e4,1e5       # a sweep

Both targets are cached once (``set_target(style, terms=["style"])`` keeps the style image's Gram
matrices, ``set_target(content, terms=["perceptual"])`` its features), so each step runs the
backbone on the image being optimised only. Outputs go to the Hydra run dir
(``outputs/style_transfer/<time>/``): ``result.png``, ``result_grid.png`` (content | style |
result), ``losses.csv`` (unweighted terms per step), ``summary.txt``. :func:`run` is the same
without Hydra's runtime.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from .common import CONFIG_DIR, CSVLog, build_criterion, load_image, save_outputs, weights_lines

logger = logging.getLogger(__name__)

INITS = ("content", "noise")
OPTIMIZERS = ("adam", "lbfgs")


@dataclass
class OptimizeResult:
    """What an optimisation run produced."""

    run_dir: str
    history: list[dict[str, float]]  # per step, before that step's update: total and unweighted terms
    final: dict[str, float]  # after the last update
    weights: str
    random_weights: bool
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    image: torch.Tensor | None = None


def _evaluate(criterion: Any, image: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        total, parts = criterion(image)
    return {"total": float(total), **{k: float(v) for k, v in parts.items()}}


def run(cfg: DictConfig, run_dir: str | Path) -> OptimizeResult:
    """Optimise an image for ``cfg`` and write its outputs into ``run_dir``."""
    run_dir = Path(run_dir)
    if cfg.init not in INITS:
        raise ValueError(f"init={cfg.init!r}; choose one of {INITS}.")
    if cfg.optim.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.optim.name!r}; choose one of {OPTIMIZERS}.")
    torch.manual_seed(int(cfg.seed))
    content = load_image(cfg.content, cfg.image_size)
    style = load_image(cfg.style, cfg.style_size or cfg.image_size)  # any size: Gram matrices do not care
    criterion, resolved = build_criterion(cfg.loss, cfg.weights)
    criterion.set_target(style, terms=["style"])  # Gram matrices, once
    criterion.set_target(content, terms=["perceptual"])  # content features, once
    image = (content.clone() if cfg.init == "content" else torch.rand_like(content)).requires_grad_(True)
    if cfg.optim.name == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam([image], lr=float(cfg.optim.lr))
    else:
        optimizer = torch.optim.LBFGS([image], lr=float(cfg.optim.lr), max_iter=1, history_size=50)

    log = CSVLog(run_dir / "losses.csv", ["step", "total", "perceptual", "style", "tv"])
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    record: dict[str, float] = {}  # the current step's first evaluation

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total, parts = criterion(image)
        total.backward()
        if not record:  # L-BFGS may call it more than once; log the first evaluation
            record.update(total=float(total.detach()), **{k: float(v) for k, v in parts.items()})
        return total

    bar = tqdm(range(int(cfg.steps)), desc="style transfer", disable=not cfg.progress, dynamic_ncols=True)
    try:
        for step in bar:
            record.clear()
            optimizer.step(closure)  # type: ignore[arg-type]
            with torch.no_grad():
                image.clamp_(0, 1)
            if not math.isfinite(record["total"]):
                raise FloatingPointError(
                    f"loss became {record['total']} at step {step}; lower optim.lr or the loss weights."
                )
            history.append(dict(record))
            log.write({"step": step, **record})
            bar.set_postfix(
                total=f"{record['total']:.4g}", content=f"{record['perceptual']:.3g}", style=f"{record['style']:.3g}"
            )
    finally:
        log.close()
        bar.close()
    seconds = time.perf_counter() - start
    final = _evaluate(criterion, image)
    result_image = image.detach()
    files = {k: str(v) for k, v in save_outputs(run_dir, content[0], style[0], result_image[0]).items()}
    files["losses"] = str(log.path)
    files["summary"] = str(run_dir / "summary.txt")
    first = history[0] if history else final
    lines = [
        f"Style transfer (Gatys, optimisation) | {cfg.optim.name} lr={cfg.optim.lr:g} | {len(history)} steps in {seconds:.0f} s | init={cfg.init}",
        f"content: {cfg.content} -> {tuple(content.shape[-2:])}; style: {cfg.style} -> {tuple(style.shape[-2:])}",
        f"loss: {criterion.extra_repr()} | {cfg.loss.backbone} content {list(cfg.loss.content_layers)} style {list(cfg.loss.style_layers)}",
        *weights_lines(resolved),
        (
            f"total loss {first['total']:.4g} -> {final['total']:.4g} "
            f"(content {first['perceptual']:.4g} -> {final['perceptual']:.4g}, style {first['style']:.4g} -> {final['style']:.4g})"
        ),
        f"outputs: {run_dir}",
        *(f"  {name:8s} {path}" for name, path in files.items()),
    ]
    summary = "\n".join(lines)
    (run_dir / "summary.txt").write_text(summary + "\n")
    return OptimizeResult(
        str(run_dir), history, final, resolved.note, resolved.random, seconds, files, summary, result_image
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="style_transfer")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final total loss (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig

    result = run(cfg, HydraConfig.get().runtime.output_dir)
    print("\n" + result.summary, flush=True)
    return result.final["total"]


if __name__ == "__main__":
    main()
