"""DISTSLoss equals the reference ``DISTS_pytorch.DISTS`` given the same VGG16 file.

The reference reads torchvision's VGG16 through the hub cache, where conftest put random weights
under torchvision's file name, and its own shipped alpha/beta: both sides see the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.functional import gaussian_blur

from perceptual_loss import CombinedLoss, DISTSLoss, InvalidWeightsError, MissingWeightsError
from perceptual_loss.backbones import L2Pool2d
from perceptual_loss.weights import dists_weights_path

DISTS_pytorch = pytest.importorskip("DISTS_pytorch")
skimage_data = pytest.importorskip("skimage.data")

_REFERENCE: list[torch.nn.Module] = []
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def reference() -> torch.nn.Module:
    if not _REFERENCE:
        _REFERENCE.append(DISTS_pytorch.DISTS().eval())
    return _REFERENCE[0]


def photographs(height: int, width: int) -> torch.Tensor:
    """Three photographs scikit-image ships, cropped to ``height x width``, in [0, 1]."""
    crops = [
        image[40 : 40 + height, 60 : 60 + width]
        for image in (skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea())
    ]
    return torch.stack([torch.from_numpy(c.copy()).permute(2, 0, 1) for c in crops]).float() / 255


def distortions(images: torch.Tensor) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    as_bytes = (images * 255).round().to(torch.uint8)
    jpeg = torch.stack([decode_jpeg(encode_jpeg(image, quality=20)) for image in as_bytes]).float() / 255
    return {
        "blur": gaussian_blur(images, kernel_size=[7, 7], sigma=[2.0, 2.0]),
        "noise": (images + 0.08 * torch.randn(images.shape, generator=generator)).clamp(0, 1),
        "jpeg": jpeg,
    }


@pytest.mark.parametrize(("height", "width"), [(64, 64), (63, 65), (48, 80)], ids=["even", "odd", "non-square"])
def test_equals_reference_per_sample(height: int, width: int) -> None:
    images = photographs(height, width)
    loss = DISTSLoss(reduction="none")
    for name, distorted in distortions(images).items():
        ours = loss(distorted, images)
        with torch.no_grad():
            expected = reference()(distorted, images, batch_average=False)
        assert ours.shape == expected.shape == (3,)
        assert (expected > 1e-3).all(), f"{name}: the pairs differ"
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5, msg=name)


def test_input_gradients_equal_the_reference_in_float64() -> None:
    images = photographs(40, 44).double()
    distorted = distortions(images.float())["noise"].double()
    ours_x = distorted.clone().requires_grad_(True)
    DISTSLoss(reduction="sum").double()(ours_x, images).backward()
    reference_x = distorted.clone().requires_grad_(True)
    model = reference().double()
    # The reference's ImageNet mean/std are float32 buffers (0.485 -> 0.48500001...): in float64,
    # give it the exact values ours uses, or ReLUs at the edge flip on 1e-8 differences.
    exact = model.mean.clone(), model.std.clone()
    model.mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    model.std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    try:
        model(reference_x, images, require_grad=True, batch_average=False).sum().backward()
    finally:
        model.mean, model.std = exact
        model.float()
    scale = reference_x.grad.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours_x.grad, reference_x.grad, rtol=0, atol=1e-6 * scale)  # alpha/beta: float32 files


def test_l2_pool_equals_the_reference_layer_with_its_gradient() -> None:
    x = torch.rand(2, 64, 17, 12, dtype=torch.float64, requires_grad=True)
    theirs = DISTS_pytorch.DISTS_pt.L2pooling(channels=64).double()
    ours = L2Pool2d().double()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(ours, (x[:, :4],))
    assert ours(x).shape == (2, 64, 9, 6)


def test_identity_is_zero_and_batch_of_one_has_shape_n() -> None:
    images = photographs(48, 48)
    loss = DISTSLoss(reduction="none")
    assert loss(images, images.clone()).abs().max() <= 1e-6
    assert loss(images[:1], images[1:2]).shape == (1,)


@pytest.mark.parametrize(
    "make",
    [lambda: torch.zeros(2, 3, 32, 32), lambda: torch.full((2, 3, 32, 32), 0.5), lambda: torch.ones(2, 3, 32, 32),
     lambda: (torch.rand(2, 3, 32, 32) > 0.5).float()],
    ids=["black", "grey", "white", "saturated"],
)  # fmt: skip
def test_finite_gradients_for_constant_saturated_and_identical_images(make) -> None:
    loss = DISTSLoss()
    for target in (make(), torch.rand(2, 3, 32, 32)):
        pred = make().requires_grad_(True)
        value = loss(pred, target)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite_and_close_to_float32(dtype: torch.dtype) -> None:
    images = photographs(48, 48)
    distorted = distortions(images)["blur"]
    loss = DISTSLoss(reduction="none")
    expected = loss(distorted, images)
    pred = distorted.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        value = loss(pred, images)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(pred.grad).all()
    torch.testing.assert_close(value.float(), expected, rtol=0, atol=2e-2)


def test_in_a_criterion_its_own_pass_and_equal_to_the_loss() -> None:
    images = photographs(48, 48)
    distorted = distortions(images)["noise"]
    criterion = CombinedLoss(dists={"weight": 2.0}, perceptual={"layers": ["relu2_2"]})
    assert sorted(criterion.extractors) == ["vgg16_0", "vgg16_1"], "max-pool and L2-pool VGG16: two views"
    assert sorted(e.pooling for e in criterion.extractors.values()) == ["l2", "max"]
    total, parts = criterion(distorted, images)
    torch.testing.assert_close(parts["dists"], DISTSLoss()(distorted, images))
    torch.testing.assert_close(total, parts["perceptual"] + 2.0 * parts["dists"])


def test_short_side_resize_shrinks_only_large_images() -> None:
    loss = DISTSLoss(resize=32, reduction="none")
    large, small = photographs(48, 80), photographs(24, 40)
    resized = F.interpolate(large, size=(32, 53), mode="bilinear", align_corners=False, antialias=True)
    distorted = distortions(large)["blur"]
    distorted_resized = F.interpolate(distorted, size=(32, 53), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(loss(distorted, large), DISTSLoss(reduction="none")(distorted_resized, resized))
    torch.testing.assert_close(loss(small, small.flip(-1)), DISTSLoss(reduction="none")(small, small.flip(-1)))


def test_missing_or_wrong_alpha_beta_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        DISTSLoss(weights=None, dists_weights=tmp_path / "nope.pt")
    wrong_keys = tmp_path / "keys.pt"
    torch.save({"alpha": torch.zeros(1, 1475, 1, 1)}, wrong_keys)
    with pytest.raises(
        InvalidWeightsError,
        match=r"keys.pt has keys \['alpha'\]; expected keys 'alpha' and 'beta', each of shape \(1, 1475, 1, 1\)",
    ):
        DISTSLoss(weights=None, dists_weights=wrong_keys)
    wrong_shape = tmp_path / "shape.pt"
    torch.save({"alpha": torch.zeros(1, 1472, 1, 1), "beta": torch.zeros(1, 1475, 1, 1)}, wrong_shape)
    with pytest.raises(InvalidWeightsError, match=r"shape.pt has shapes \{'alpha': \(1, 1472, 1, 1\)\}"):
        DISTSLoss(weights=None, dists_weights=wrong_shape)
    assert dists_weights_path().is_file()


def test_missing_package_says_how_to_get_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "DISTS_pytorch" else real(name, *a)
    )
    with pytest.raises(MissingWeightsError, match=r"pip install 'perceptual-loss\[dists\]'"):
        DISTSLoss(weights=None)


def test_bad_input_is_a_clear_error() -> None:
    loss = DISTSLoss(weights=None)
    with pytest.raises(ValueError, match="3 channels"):
        loss(torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="target values span"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
