"""The style-transfer example (examples/style_transfer): Gatys optimisation and Johnson feed-forward.

Backbone weights come from conftest's temporary TORCH_HOME (random weights saved as the ImageNet
files), so these tests prove mechanics and caching parity, not artistic quality.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")
pytest.importorskip("hydra")
pytest.importorskip("skimage")

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from examples.style_transfer import optimize, train
from examples.style_transfer.common import CONFIG_DIR, ImageError, build_criterion, load_image
from examples.style_transfer.data import CropsDataModule
from examples.style_transfer.networks import TransformerNet
from perceptual_loss import CombinedLoss, PerceptualLoss, StyleLoss, total_variation

ROOT = Path(__file__).resolve().parents[1]


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def write_png(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = () if mode == "L" else (3,)
    small = rng.integers(0, 256, size=(max(height // 4, 1), max(width // 4, 1), *channels), dtype=np.uint8)
    Image.fromarray(small, mode=mode).resize((width, height), Image.BICUBIC).save(path)
    return path


def small_optimize(overrides: Sequence[str] = ()) -> DictConfig:
    return compose_config(
        "style_transfer",
        [
            "image_size=40",
            "style_size=48",
            "steps=12",
            "weights=imagenet",
            "progress=false",
            "optim.lr=0.05",
            *overrides,
        ],
    )


# ----------------------------------------------------------------------------- optimisation (Gatys)


def test_optimize_from_noise_lowers_total_and_content(tmp_path: Path) -> None:
    result = optimize.run(small_optimize(["init=noise"]), tmp_path)
    first, final = result.history[0], result.final
    assert final["total"] < first["total"]
    assert final["perceptual"] < first["perceptual"]  # content term falls from noise
    assert result.weights == "ImageNet (torchvision)" and not result.random_weights
    for name in ("result.png", "result_grid.png", "losses.csv", "summary.txt"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,total,perceptual,style,tv" and len(rows) == 1 + 12
    assert result.image is not None and result.image.shape == (1, 3, 40, 40)  # astronaut is square


def test_optimize_from_content_lowers_style(tmp_path: Path) -> None:
    result = optimize.run(small_optimize(["init=content", "loss.content_weight=0.01"]), tmp_path)
    assert result.history[0]["perceptual"] == pytest.approx(0.0, abs=1e-8)  # starts at the content image
    assert result.final["style"] < result.history[0]["style"]
    assert result.final["total"] < result.history[0]["total"]


def test_optimize_lbfgs_lowers_total(tmp_path: Path) -> None:
    result = optimize.run(small_optimize(["optim.name=lbfgs", "optim.lr=1", "steps=5", "init=noise"]), tmp_path)
    assert result.final["total"] < result.history[0]["total"]


def test_cached_targets_match_uncached_losses() -> None:
    cfg = small_optimize()
    content, style = load_image(cfg.content, 40), load_image(cfg.style, 48)  # style: another size
    pred = torch.rand_like(content)
    cached, resolved = build_criterion(cfg.loss, "imagenet")
    assert resolved.arg == "imagenet" and len(cached.extractors) == 1  # content and style share one VGG19
    cached.set_target(style, terms=["style"])
    cached.set_target(content, terms=["perceptual"])
    total, parts = cached(pred)

    style_cached, _ = build_criterion(cfg.loss, "imagenet")
    style_cached.set_target(style, terms=["style"])
    total_2, _ = style_cached(pred, content)  # content given explicitly
    torch.testing.assert_close(total, total_2)

    perceptual = PerceptualLoss(list(cfg.loss.content_layers), backbone="vgg19", distance="l2")(pred, content)
    gram = StyleLoss(list(cfg.loss.style_layers), backbone="vgg19")(pred, style)
    torch.testing.assert_close(parts["perceptual"], perceptual)
    torch.testing.assert_close(parts["style"], gram)
    expected = (
        cfg.loss.content_weight * perceptual
        + cfg.loss.style_weight * gram
        + cfg.loss.tv_weight * total_variation(pred).mean()
    )
    torch.testing.assert_close(total, expected)


# ----------------------------------------------------------------------------- feed-forward (Johnson)


def small_train(overrides: Sequence[str] = ()) -> DictConfig:
    return compose_config(
        "fast_style_transfer",
        [
            "weights=imagenet", "style_size=48", "apply_size=40", "data.resize=64", "data.crop_size=32",
            "data.batch_size=2", "model.channels=8", "model.residual_blocks=1", "trainer.enable_progress_bar=false",
            *overrides,
        ],
    )  # fmt: skip


def test_train_fast_dev_run(tmp_path: Path) -> None:
    result = train.run(small_train(["trainer.fast_dev_run=true"]), tmp_path)
    assert result.steps == 1 and len(result.losses) == 1 and not result.random_weights
    assert (tmp_path / "result.png").is_file() and (tmp_path / "result_grid.png").is_file()
    from PIL import Image

    with Image.open(tmp_path / "result_grid.png") as grid:  # chelsea 40x60 | style 40x40 | result 40x60
        assert grid.size == (60 + 40 + 60 + 4 * 4, 40 + 2 * 4)
    assert "(none: fast_dev_run)" in result.files["metrics"] and (tmp_path / "summary.txt").is_file()


def test_train_short_run_loss_falls(tmp_path: Path) -> None:
    result = train.run(small_train(["trainer.max_steps=24", "optim.lr=5e-3"]), tmp_path)
    assert result.steps == 24
    losses = result.losses
    assert sum(losses[-6:]) / 6 < 0.8 * sum(losses[:6]) / 6, losses
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "train/total" in metrics and "train/content" in metrics and "train/style" in metrics
    from PIL import Image

    with Image.open(tmp_path / "result.png") as image:  # chelsea (300x451) with shorter side 40
        assert image.size == (60, 40) and image.mode == "RGB"


# ----------------------------------------------------------------------------- bad and unusual inputs


def test_missing_image_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "content.jpg"
    with pytest.raises(ImageError, match="not found.*content.jpg"):
        load_image(missing)
    with pytest.raises(ImageError, match=str(missing).replace("\\", "\\\\")):
        optimize.run(small_optimize([f"content={missing}"]), tmp_path / "run")


def test_unreadable_image_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(ImageError, match="Cannot read image file .*broken.png"):
        load_image(bad)
    with pytest.raises(ImageError, match="Unknown scikit-image picture"):
        load_image("skimage:not_a_picture")


def test_grayscale_images_become_rgb(tmp_path: Path) -> None:
    gray = load_image(write_png(tmp_path / "gray.png", 30, 50, mode="L"), size=20)
    assert gray.shape == (1, 3, 20, 33) and gray.min() >= 0 and gray.max() <= 1
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    texture = load_image("skimage:gravel", size=32)  # a grayscale scikit-image texture
    assert texture.shape == (1, 3, 32, 32)


def test_style_image_of_another_size_and_aspect(tmp_path: Path) -> None:
    style = write_png(tmp_path / "style.png", 64, 36, mode="L")
    content = write_png(tmp_path / "content.png", 50, 40, seed=1)
    cfg = small_optimize([f"content={content}", f"style={style}", "style_size=36", "steps=3"])
    result = optimize.run(cfg, tmp_path / "run")
    assert result.image is not None and result.image.shape == (1, 3, 50, 40)
    assert np.isfinite(result.final["total"])


# ----------------------------------------------------------------------------- configs


def test_configs_compose_and_instantiate() -> None:
    cfg = compose_config("style_transfer")
    OmegaConf.resolve(cfg)
    assert cfg.weights == "auto" and cfg.init == "content" and cfg.optim.name == "adam"
    assert list(cfg.loss.content_layers) == ["relu4_2"] and cfg.loss.backbone == "vgg19"
    assert list(cfg.loss.style_layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    criterion, resolved = build_criterion(cfg.loss, cfg.weights)
    assert isinstance(criterion, CombinedLoss) and resolved.arg == "imagenet"  # conftest's cached files
    assert criterion.term_weights == {"perceptual": 1.0, "style": 1e5} and criterion.tv_weight == cfg.loss.tv_weight

    cfg = compose_config("fast_style_transfer", ["loss.style_weight=3e4", "data.crop_size=32", "data.resize=48"])
    OmegaConf.resolve(cfg)
    assert list(cfg.loss.content_layers) == ["relu2_2"] and cfg.loss.backbone == "vgg16"
    assert list(cfg.loss.style_layers) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    criterion, _ = build_criterion(cfg.loss, cfg.weights)
    assert criterion.term_weights["style"] == 3e4
    network = instantiate(cfg.model, _convert_="all")
    assert isinstance(network, TransformerNet)
    out = network(torch.rand(1, 3, 30, 42))  # not a multiple of 4: padded and cropped back
    assert out.shape == (1, 3, 30, 42) and out.min() >= 0 and out.max() <= 1
    datamodule = instantiate(cfg.data, _convert_="all")
    assert (
        isinstance(datamodule, CropsDataModule)
        and len(datamodule.train_set) == cfg.trainer.max_steps * cfg.data.batch_size
    )
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.shape == (cfg.data.batch_size, 3, 32, 32)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == 200


def test_multirun_sweep_over_style_weight(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "examples.style_transfer.optimize", "-m", "loss.style_weight=1e4,1e5",
        "image_size=32", "steps=2", "progress=false", "weights=imagenet", f"hydra.sweep.dir={tmp_path}",
    ]  # fmt: skip
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = sorted(tmp_path.glob("*/summary.txt"))
    assert len(summaries) == 2 and all("loss.style_weight=" in p.parent.name for p in summaries)
    assert "style=10000," in summaries[0].read_text() and "style=100000," in summaries[1].read_text()
