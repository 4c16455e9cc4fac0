"""The SR example trains for real: fast_dev_run per experiment, a short run that beats bicubic,
checkpoints without loss backbones, resuming, grids, CSV, summary and the evaluation entry point."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("hydra")
pytest.importorskip("torchmetrics")
pytest.importorskip("skimage")

import torch
from omegaconf import OmegaConf
from PIL import Image

from examples.super_resolution import evaluate
from examples.super_resolution.train import RunResult, format_table, run

from .examples_sr import TINY, compose_config, write_png

EXPERIMENTS = ["sr_l1", "sr_perceptual", "sr_lpips", "sr_gan"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_per_experiment(experiment: str, tmp_path: Path) -> None:
    overrides = [f"experiment={experiment}", *TINY, "trainer.fast_dev_run=true"]
    if experiment == "sr_gan":
        overrides.append("loss.adversarial.start_step=0")  # the GAN branch runs in the one step
    result = run(compose_config(overrides), tmp_path)
    assert result.steps == (2 if experiment == "sr_gan" else 1)  # GAN: generator + discriminator steps
    assert {f"{m}_{k}" for m in ("bicubic", "model") for k in ("psnr", "ssim", "lpips")} <= set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert (tmp_path / "summary.txt").read_text().startswith("Super-resolution x2")
    assert len(list((tmp_path / "grids").glob("*.png"))) == 1


# A short real run: small EDSR, L1 + VGG16 relu2_2, on the embedded photographs.
REAL = [
    "model=edsr",
    "loss=perceptual",
    "loss.weights=imagenet",
    "data.crop_size=48",
    "data.batch_size=8",
    "data.steps_per_epoch=40",
    "data.val_crop=128",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=5",
    "outputs.grids=2",
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run(compose_config(REAL), tmp_path_factory.mktemp("real_run"))


@pytest.mark.slow
def test_short_run_loss_falls_and_beats_bicubic(real_run: RunResult) -> None:
    with open(Path(real_run.run_dir) / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 16  # 80 steps, logged every 5
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    m = real_run.metrics
    assert real_run.steps == 80
    assert m["model_psnr"] > m["bicubic_psnr"], m
    assert m["model_ssim"] > m["bicubic_ssim"], m
    # validation is logged each epoch, bicubic is the same every time
    val = [(float(r["val/bicubic_psnr"]), float(r["val/model_psnr"])) for r in rows if r.get("val/model_psnr")]
    assert len(val) == 2 and val[0][0] == pytest.approx(val[1][0])


def test_heatmaps_next_to_the_grids(tmp_path: Path) -> None:
    result = run(compose_config([*TINY, "trainer.fast_dev_run=true", "outputs.heatmaps=true"]), tmp_path)
    grids = sorted(p.name for p in (tmp_path / "grids").glob("*.png"))
    assert len(grids) == 2 and grids[1] == grids[0].replace(".png", "_lpips.png")
    with Image.open(tmp_path / "grids" / grids[0]) as grid, Image.open(tmp_path / "grids" / grids[1]) as heat:
        assert heat.mode == "RGB" and heat.size[1] == grid.size[1] - 8, "the HR image's height (grid padding 4)"
    assert result.steps == 1


def test_outputs_grids_summary(real_run: RunResult) -> None:
    run_dir = Path(real_run.run_dir)
    grids = sorted(p.name for p in (run_dir / "grids").glob("*.png"))
    assert grids == ["epoch000_chelsea.png", "epoch000_rocket.png", "epoch001_chelsea.png", "epoch001_rocket.png"]
    with Image.open(run_dir / "grids" / "epoch001_chelsea.png") as grid:
        # bicubic | SR | HR side by side: 128x128 crops, padding 4
        assert grid.size == (3 * 128 + 4 * 4, 128 + 2 * 4)
    summary = (run_dir / "summary.txt").read_text()
    assert "bicubic" in summary and "model" in summary and str(run_dir / "grids") in summary
    assert "loss ImageNet (torchvision)" in summary and "RANDOM" not in summary


def test_checkpoint_holds_network_and_optimiser_not_loss_backbones(real_run: RunResult) -> None:
    checkpoint = torch.load(Path(real_run.run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = set(checkpoint["state_dict"])
    assert keys and all(k.startswith("network.") or k == "generator_steps" for k in keys), sorted(keys)
    assert not any(k.startswith(("criterion.", "metrics.")) for k in keys)
    assert len(checkpoint["optimizer_states"]) == 1 and checkpoint["optimizer_states"][0]["state"]
    assert checkpoint["hyper_parameters"]["model"]["_target_"].endswith("EDSR") and checkpoint["global_step"] == 80
    assert (Path(real_run.run_dir) / "checkpoints" / "best.ckpt").is_file()


def test_resume_continues_from_the_checkpoint(real_run: RunResult, tmp_path: Path) -> None:
    ckpt = Path(real_run.run_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = compose_config([*REAL, f"ckpt_path={ckpt}", "trainer.max_epochs=3", "+trainer.limit_train_batches=3"])
    seen: dict[str, object] = {}

    import lightning as L

    class Probe(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen["epoch"], seen["step"] = trainer.current_epoch, trainer.global_step
            seen["weights"] = {k: v.clone() for k, v in pl_module.network.state_dict().items()}

    OmegaConf.set_struct(cfg, False)
    cfg.callbacks = {"probe": {"_target_": f"{__name__}._probe_factory"}}
    _PROBE[0] = Probe()
    result = run(cfg, tmp_path)
    assert seen["epoch"] == 2 and seen["step"] == 80
    for key, value in seen["weights"].items():  # type: ignore[union-attr]
        assert torch.equal(value, saved["state_dict"][f"network.{key}"]), key
    assert result.steps == 83


_PROBE: list[object] = [None]


def _probe_factory() -> object:
    return _PROBE[0]


def test_evaluate_entry_point_scores_a_folder(real_run: RunResult, tmp_path: Path) -> None:
    images = tmp_path / "hr"
    images.mkdir()
    write_png(images / "a.png", 70, 90, seed=1)  # not a multiple of 2 in one side: cropped
    write_png(images / "b.png", 64, 64, seed=2)
    out = tmp_path / "out"
    cfg = compose_config(
        [
            f"ckpt={Path(real_run.run_dir) / 'checkpoints' / 'last.ckpt'}",
            f"input_dir={images}",
            f"output_dir={out}",
            "weights=imagenet",
        ],
        name="eval",
    )
    table = evaluate.run(cfg)
    assert "bicubic" in table and "model" in table
    with Image.open(out / "a_x2_SR.png") as sr:
        assert sr.size == (90, 70)
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image"] for r in rows] == ["a.png", "b.png"] and all(float(r["model_psnr"]) > 10 for r in rows)
    assert (out / "summary.txt").read_text() == table + "\n"


def test_random_weights_are_announced_in_the_table() -> None:
    result = RunResult(
        run_dir="r", metrics={f"{m}_{k}": 1.0 for m in ("bicubic", "model") for k in ("psnr", "ssim", "lpips")},
        loss_weights="RANDOM (not perceptual)", lpips_weights="RANDOM (not perceptual)", random_weights=True, steps=1, seconds=1.0,
        description={"scale": "2", "model": "EDSR", "loss": "l1=1", "weights": "backbone weights: loss RANDOM (not perceptual)", "val": "x"},
    )  # fmt: skip
    table = format_table(result)
    assert (
        "backbone weights: RANDOM (not perceptual)" in table and "LPIPS-alex (RANDOM weights: not perceptual)" in table
    )


def test_gan_warm_up_then_both_optimisers(tmp_path: Path) -> None:
    overrides = ["experiment=sr_gan", *TINY, "data.steps_per_epoch=3", "loss.adversarial.start_step=1"]
    result = run(compose_config(overrides), tmp_path)
    assert result.steps == 1 + 2 * 2  # one warm-up generator step, then generator + discriminator
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    assert [bool(r["train/discriminator"]) for r in rows] == [False, True, True]
    assert all(math.isfinite(float(r["train/adversarial"])) for r in rows[1:]) and not rows[0]["train/adversarial"]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(checkpoint["state_dict"]["generator_steps"]) == 3 and len(checkpoint["optimizer_states"]) == 2
    assert all(k.startswith(("network.", "discriminator.")) or k == "generator_steps" for k in checkpoint["state_dict"])
