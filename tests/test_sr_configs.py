"""Every file in configs/ composes and instantiates (the SR example's Hydra configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("hydra")
pytest.importorskip("torchmetrics")
pytest.importorskip("skimage")

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from examples.super_resolution.data import SRDataModule
from examples.super_resolution.module import SRModule
from examples.super_resolution.train import CONFIG_DIR, build_criterion, build_module
from perceptual_loss import CombinedLoss

from .examples_sr import compose_config, write_png

SR_GROUPS = ("model", "data", "loss", "trainer", "experiment")
# The SR example's configs: train.yaml, eval.yaml and every option of its groups (other top-level
# files in configs/, e.g. another example's, are that example's tests' business).
CONFIGS = ["eval", "train"] + sorted(
    str(p.relative_to(CONFIG_DIR).with_suffix(""))
    for group in SR_GROUPS
    for p in (Path(CONFIG_DIR) / group).glob("*.yaml")
)


def test_config_tree_is_complete() -> None:
    expected = {
        "train", "eval", "model/espcn", "model/edsr", "data/embedded", "data/folder",
        "loss/l1", "loss/perceptual", "loss/perceptual_style", "loss/lpips", "loss/gan", "loss/real_esrgan", "loss/l1_ms_ssim",
        "trainer/cpu", "trainer/gpu", "trainer/ddp",
        "experiment/sr_l1", "experiment/sr_perceptual", "experiment/sr_lpips", "experiment/sr_gan",
    }  # fmt: skip
    assert set(CONFIGS) == expected  # a new option needs its line here and in the example's README


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(2):
        write_png(root / f"img{i}.png", 120, 100, seed=i)
    return root


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_instantiates(name: str, folder: Path) -> None:
    if name == "eval":
        cfg = compose_config(["ckpt=a.ckpt", f"input_dir={folder}", "output_dir=out"], name="eval")
        assert cfg.weights == "auto" and cfg.ckpt == "a.ckpt"
        return
    group, _, option = name.partition("/")
    overrides = [] if group == "train" else [f"{group}={option}"]
    if option == "folder":
        overrides += [f"data.train.path={folder}", f"data.val.path={folder}", "data.crop_size=64", "data.num_workers=0"]
    cfg = compose_config(overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if group in ("train", "experiment"):
        module, loss_weights, _ = build_module(cfg)
        assert loss_weights.arg == "imagenet"  # conftest caches the files: auto uses them
        assert isinstance(module, SRModule) and isinstance(module.criterion, CombinedLoss)
        assert (module.discriminator is not None) == (option == "sr_gan")
        assert isinstance(instantiate(cfg.data, _convert_="all"), SRDataModule)
        lr = torch.rand(1, 3, 8, 8)
        assert module.network(lr).shape == (1, 3, 8 * cfg.scale, 8 * cfg.scale)
    elif group == "model":
        network = instantiate(cfg.model, _convert_="all")
        assert network(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    elif group == "data":
        datamodule = instantiate(cfg.data, _convert_="all")
        lr, hr = next(iter(datamodule.train_dataloader()))
        assert hr.shape[-1] == cfg.data.crop_size and lr.shape[-1] == cfg.data.crop_size // cfg.scale
    elif group == "loss":
        assert cfg.loss.weights == "auto"
        criterion, resolved = build_criterion(cfg.loss)
        assert isinstance(criterion, CombinedLoss) and resolved.arg == "imagenet"  # conftest's cached files
        size = max(32, criterion.min_size)  # MS-SSIM's five scales need 161 pixels
        pred, target = torch.rand(2, 3, size, size, requires_grad=True), torch.rand(2, 3, size, size)
        total, parts = criterion(pred, target, fake_logits=torch.randn(2, 1), real_logits=torch.randn(2, 1), step=10**6)
        total.backward()
        assert torch.isfinite(total) and pred.grad is not None and "l1" in parts
        assert (criterion.adversarial is not None) == (option == "gan")
    elif group == "trainer":
        extra = (
            {} if option != "gpu" or torch.cuda.is_available() else {"accelerator": "cpu"}
        )  # other kwargs still checked
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, **extra)
        assert isinstance(trainer, L.Trainer)
        if option == "ddp":
            assert trainer.world_size == 2 and type(trainer.strategy).__name__ == "DDPStrategy"
            assert trainer.strategy._process_group_backend == "gloo"
        if option == "gpu":
            assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1
    else:  # pragma: no cover - a new group needs a branch here
        pytest.fail(f"no instantiation check for {name}")


def test_overrides_reach_the_objects() -> None:
    cfg = compose_config(["scale=4", "model=espcn", "loss=perceptual_style", "loss.style.weight=3", "optim.lr=0.01"])
    module, _, _ = build_module(cfg)
    assert module.network.scale == 4 and module.scale == 4 and module.metrics.scale == 4
    assert module.criterion.term_weights == {"perceptual": 0.05, "style": 3.0} and module.lr == 0.01
    assert len(module.criterion.extractors) == 1  # perceptual and style share one VGG16 pass


def test_mismatched_gan_configuration_is_an_error() -> None:
    with pytest.raises(ValueError, match="experiment=sr_gan"):
        build_module(compose_config(["loss=gan"]))
