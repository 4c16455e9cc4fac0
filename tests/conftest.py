"""Offline ImageNet weights for the whole suite.

The default ``weights="imagenet"`` path must run for real in tests, but nothing can be downloaded.
So, once per session, randomly initialised torchvision models are saved under the exact file names
torchvision's weights API expects, in a temporary ``$TORCH_HOME/hub/checkpoints/``. Every test then
loads "ImageNet" weights through torchvision and the hub cache exactly as a user's machine does:
random weights, so the tests prove mechanics and parity, never perceptual quality.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torchvision import models

from perceptual_loss.weights import imagenet_weights_path

CONSTRUCTORS = {
    "vgg16": models.vgg16,
    "vgg19": models.vgg19,
    "alexnet": models.alexnet,
    "squeezenet1_1": models.squeezenet1_1,
}


def write_random_torchvision_weights(checkpoints: Path, backbone: str, seed: int = 0) -> Path:
    """Save a randomly initialised torchvision ``backbone`` under torchvision's file name."""
    torch.manual_seed(seed)
    path = checkpoints / imagenet_weights_path(backbone).name
    torch.save(CONSTRUCTORS[backbone](weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="session", autouse=True)
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary TORCH_HOME whose hub cache holds random weights for every backbone."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        for backbone in CONSTRUCTORS:
            write_random_torchvision_weights(checkpoints, backbone, seed=len(backbone))
        torch.manual_seed(0)  # the traced backbone of the losses' shared contract tests
        torch.save(models.resnet18(weights=None).state_dict(), checkpoints / imagenet_weights_path("resnet18").name)
        yield home
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous


@pytest.fixture(scope="session")
def checkpoints(torch_home: Path) -> Path:
    return torch_home / "hub" / "checkpoints"


@pytest.fixture(scope="session")
def torchvision_weights(checkpoints: Path) -> Callable[..., Path]:
    """``write(name, member="DEFAULT", seed=0)``: random weights of any torchvision model, saved
    once under the file name of its weights enum entry ``member`` in the temporary hub cache."""
    written: set[Path] = set()

    def write(name: str, member: str = "DEFAULT", seed: int = 0) -> Path:
        path = imagenet_weights_path(name, member)
        assert path.parent == checkpoints
        if path not in written:
            torch.manual_seed(seed)
            torch.save(models.get_model(name, weights=None).state_dict(), path)
            written.add(path)
        return path

    return write


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible ``(2, 3, 64, 64)`` pred/target pair in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)


REAL_WEIGHTS_VARIABLE = "PERCEPTUAL_LOSS_REAL_WEIGHTS"


@pytest.fixture(scope="session")
def real_weights() -> Path:
    """The folder of real weight files named by ``$PERCEPTUAL_LOSS_REAL_WEIGHTS`` (CI: ``../shared/weights``).

    Tests that need perception (not only mechanics) take this fixture; without the folder they are
    skipped, and the skip says why.
    """
    folder = os.environ.get(REAL_WEIGHTS_VARIABLE)
    if not folder:
        pytest.skip(f"real weights: set {REAL_WEIGHTS_VARIABLE} to a folder holding squeezenet1_1-real.pth and imgs/")
    path = Path(folder)
    if not (path / "squeezenet1_1-real.pth").is_file():
        pytest.skip(f"real weights: {REAL_WEIGHTS_VARIABLE}={folder} holds no squeezenet1_1-real.pth")
    return path
