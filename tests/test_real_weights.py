"""With real ImageNet weights: the losses are perceptual, not only well-formed.

The weights are torchvision's SqueezeNet 1.1 (``IMAGENET1K_V1``, the trunk LPIPS-squeeze was
calibrated on) as recovered in ``../shared/weights``: conv weights truncated to float16, so
values differ from torchvision's own file by about 1e-4. Implementations are compared on this
same file. Set ``PERCEPTUAL_LOSS_REAL_WEIGHTS`` to that folder (CI does when it exists); without
it every test here is skipped with that reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptual_loss import FeatureExtractor, LPIPSLoss, evaluate_folders
from perceptual_loss.evaluate import load_image

from .test_lpips_parity import reference_lpips

SHA256 = "19f0d40c45e211a9e5d9a4cb5e4b69d2f40b6a59e375b94465dfb3c6ab06784a"
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def squeezenet(real_weights: Path) -> Path:
    path = real_weights / "squeezenet1_1-real.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256, "not the documented file"
    return path


@pytest.fixture(scope="module")
def triplet(real_weights: Path) -> dict[str, torch.Tensor]:
    """The LPIPS repository's example: a reference and two distortions (64x64)."""
    return {name: load_image(real_weights / "imgs" / f"{name}.png")[None] for name in ("ex_ref", "ex_p0", "ex_p1")}


def test_the_real_trunk_classifies_a_cat_as_a_cat(squeezenet: Path) -> None:
    """The loading path is right end to end: file -> our loader -> the logits tap."""
    from skimage import data

    image = Image.fromarray(data.chelsea())  # torchvision's preprocessing: short side 256, centre 224
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    extractor = FeatureExtractor("squeezenet1_1", ["logits"], weights=squeezenet)
    with torch.no_grad():
        probabilities = extractor(x)["logits"].softmax(-1)[0]
    assert int(probabilities.argmax()) in IMAGENET_CATS
    assert float(probabilities[list(IMAGENET_CATS)].sum()) > 0.9


def test_lpips_squeeze_with_the_real_trunk_equals_lpips(squeezenet: Path, triplet: dict[str, torch.Tensor]) -> None:
    reference = reference_lpips("squeeze", "0.1", squeezenet)
    ours = LPIPSLoss(net="squeeze", weights=squeezenet, reduction="none")
    generator = torch.Generator().manual_seed(0)
    noisy = (triplet["ex_ref"] + 0.1 * torch.randn(triplet["ex_ref"].shape, generator=generator)).clamp(0, 1)
    pred = torch.cat([triplet["ex_p0"], triplet["ex_p1"], noisy])
    target = triplet["ex_ref"].expand_as(pred)
    with torch.no_grad():
        expected = reference(2 * pred - 1, 2 * target - 1).flatten()
        actual = ours(pred, target)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_lpips_agrees_with_the_human_judges(squeezenet: Path, triplet: dict[str, torch.Tensor]) -> None:
    """Humans judged ex_p1 closer to ex_ref than ex_p0; so does LPIPS-squeeze with real weights."""
    loss = LPIPSLoss(net="squeeze", weights=squeezenet)
    with torch.no_grad():
        d0 = float(loss(triplet["ex_p0"], triplet["ex_ref"]))
        d1 = float(loss(triplet["ex_p1"], triplet["ex_ref"]))
    assert d1 < 0.5 * d0, (d0, d1)  # by a wide margin


def test_the_evaluator_gives_the_same_verdict_from_files(real_weights: Path, squeezenet: Path, tmp_path: Path) -> None:
    images = real_weights / "imgs"
    for name in ("p0", "p1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ex.png").write_bytes((images / f"ex_{name}.png").read_bytes())
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "ex.png").write_bytes((images / "ex_ref.png").read_bytes())
    scores = {
        name: float(
            evaluate_folders(tmp_path / name, tmp_path / "ref", net="squeeze", weights=squeezenet).rows[0]["lpips"]
        )
        for name in ("p0", "p1")
    }
    assert scores["p1"] < scores["p0"]
