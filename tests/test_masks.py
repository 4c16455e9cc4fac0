"""Masked losses: only the region counts, for every term."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn

from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss, gram_matrix
from perceptual_loss.distances import masks_at

pytest.importorskip("DISTS_pytorch")

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "perceptual": lambda: PerceptualLoss(["relu1_2", "relu2_2", "conv3_3"]),
    "perceptual-l2": lambda: PerceptualLoss(["relu2_2"], distance="l2"),
    "perceptual-normalized": lambda: PerceptualLoss(["relu2_2"], distance="normalized_l2"),
    "style": lambda: StyleLoss(["relu1_2", "relu2_2"]),
    "lpips": lambda: LPIPSLoss(net="squeeze"),
    "dists": lambda: DISTSLoss(),
    "resnet18": lambda: PerceptualLoss(["bn1", "layer1", "layer2"], backbone="resnet18"),
}


def pair(shape: tuple[int, ...] = (2, 3, 48, 40), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def box(shape: tuple[int, ...], top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    mask = torch.zeros(shape[0], 1, *shape[2:])
    mask[..., top:bottom, left:right] = 1
    return mask


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ones_mask_equals_no_mask(name: str) -> None:
    loss = LOSSES[name]()
    x, y = pair()
    torch.testing.assert_close(loss(x, y, mask=torch.ones(2, 1, 48, 40)), loss(x, y), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        loss(x, y, mask=torch.ones(1, 1, 48, 40, dtype=torch.bool)), loss(x, y), rtol=0, atol=1e-6
    )


def test_all_ones_mask_equals_no_mask_for_every_criterion_term() -> None:
    criterion = CombinedLoss(
        l1=1.0, l2=1.0, charbonnier=1.0, tv=0.1, perceptual={"layers": ["relu2_2"]}, style={"layers": ["relu1_2"]},
        lpips={"net": "vgg"}, dists={"weight": 1.0},
    )  # fmt: skip
    x, y = pair()
    _, plain = criterion(x, y)
    _, masked = criterion(x, y, mask=torch.ones(2, 1, 48, 40))
    assert sorted(plain) == sorted(masked)
    for term in plain:
        torch.testing.assert_close(masked[term], plain[term], rtol=0, atol=1e-6, msg=term)


@pytest.mark.parametrize(
    ("name", "margin"),
    # half the deepest tap's receptive field, plus one cell of its grid: VGG16 conv3_3 sees 40 px,
    # ResNet-18 layer2 99 px, SqueezeNet fire9 207 px, DISTS' relu5_3 (L2-pools of 3) about 250 px
    [("perceptual", 24), ("resnet18", 58), ("lpips", 120), ("dists", 140)],
)
def test_pixels_beyond_the_receptive_field_margin_do_not_count(name: str, margin: int) -> None:
    """Outside the mask, farther than the deepest tap sees, a change moves the loss by < 1e-6."""
    loss = LOSSES[name]()
    size = 2 * margin + 40 + 64
    x, y = pair((1, 3, size, size))
    start, stop = size // 2 - 20, size // 2 + 20
    mask = box(x.shape, start, stop, start, stop)
    far = torch.ones_like(mask, dtype=torch.bool)
    far[..., start - margin : stop + margin, start - margin : stop + margin] = False
    changed = torch.where(far, torch.rand_like(x), x)
    assert (changed != x).any()
    before, after = loss(x, y, mask=mask), loss(changed, y, mask=mask)
    assert abs((after - before).item()) < 1e-6
    inside = x.clone()
    region = inside[..., start + 5 : stop - 5, start + 5 : stop - 5]
    region.copy_(1 - region)  # a large, deterministic change (fresh noise can move DISTS by < 1e-4)
    assert abs((loss(inside, y, mask=mask) - before).item()) > 1e-4, "the region itself counts"


def test_disjoint_masks_recombine_to_the_unmasked_value() -> None:
    loss = PerceptualLoss(["relu2_2"], reduction="none")
    x, y = pair()
    left = box(x.shape, 0, 48, 0, 17)  # not aligned with relu2_2's 2x2 cells: soft weights at the seam
    right = 1 - left
    features = loss.extractor(x)
    area = {name: masks_at(m, features)["relu2_2"].sum(dim=(1, 2, 3)) for name, m in (("left", left), ("right", right))}
    combined = (area["left"] * loss(x, y, mask=left) + area["right"] * loss(x, y, mask=right)) / (
        area["left"] + area["right"]
    )
    torch.testing.assert_close(combined, loss(x, y), rtol=1e-6, atol=1e-7)


def test_weighted_gram_is_the_gram_matrix_of_the_region() -> None:
    features = torch.randn(2, 8, 12, 10, dtype=torch.float64)
    mask = box((2, 1, 24, 20), 4, 16, 6, 14)  # whole 2x2 cells of a half-resolution tap
    pooled = masks_at(mask.double(), {"tap": features})["tap"]
    assert set(pooled.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(
        gram_matrix(features, pooled), gram_matrix(features[..., 2:8, 3:7]), rtol=1e-12, atol=1e-12
    )


def test_style_matches_a_texture_inside_a_region() -> None:
    loss = StyleLoss(["relu1_2", "relu2_2"])
    texture = torch.rand(1, 3, 32, 32)
    canvas = torch.linspace(0.2, 0.8, 64).expand(1, 3, 64, 64).clone()  # smooth, unlike the texture
    canvas[..., 16:48, 16:48] = texture
    mask = box(canvas.shape, 16, 48, 16, 48)
    inside_only = loss(canvas, texture, mask=mask)  # a style target of another size: only pred is masked
    assert inside_only < 0.2 * loss(canvas, texture)


@pytest.mark.parametrize("kind", ["empty", "full", "single-pixel", "checkerboard"])
@pytest.mark.parametrize("name", ["perceptual", "style", "lpips", "dists"])
def test_finite_gradients_for_edge_masks(name: str, kind: str) -> None:
    loss = LOSSES[name]()
    x, y = pair((2, 3, 32, 32))
    mask = torch.zeros(2, 1, 32, 32)
    if kind == "full":
        mask += 1
    elif kind == "single-pixel":
        mask[..., 7, 9] = 1
    elif kind == "checkerboard":
        mask[..., ::2, ::2] = 1
        mask[..., 1::2, 1::2] = 1
    pred = x.clone().requires_grad_(True)
    value = loss(pred, y, mask=mask)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    if kind == "empty":
        assert value.item() == 0.0 if name != "dists" else torch.isfinite(value)


def test_empty_mask_gives_zero_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    loss = PerceptualLoss(["relu2_2"], reduction="none")
    x, y = pair()
    mask = torch.ones(2, 1, 48, 40)
    mask[1] = 0
    with caplog.at_level(logging.WARNING, logger="perceptual_loss"):
        values = loss(x, y, mask=mask)
        loss(x, y, mask=mask)
    assert values[1].item() == 0.0 and values[0].item() > 0
    assert len([r for r in caplog.records if "mask is empty" in r.getMessage()]) == 1


def test_gradcheck_with_a_soft_mask() -> None:
    loss = PerceptualLoss(["relu1_2"], weights=None).double()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    mask = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: loss(p, y, mask=mask), (x,))


def test_compiles_without_graph_breaks_with_a_mask() -> None:
    loss = PerceptualLoss(["relu1_2", "relu2_2"])
    x, y = pair()
    mask = box(x.shape, 8, 40, 4, 30)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    pred = x.clone().requires_grad_(True)
    value = compiled(pred, y, mask=mask)
    value.backward()
    torch.testing.assert_close(value, loss(x, y, mask=mask), rtol=1e-5, atol=1e-7)


def test_bad_masks_are_clear_errors_and_masks_are_never_modified() -> None:
    loss = PerceptualLoss(["relu2_2"])
    x, y = pair()
    with pytest.raises(
        ValueError, match=r"mask must have shape \(2, 1, 48, 40\) or \(1, 1, 48, 40\).*got \(2, 48, 40\)"
    ):
        loss(x, y, mask=torch.ones(2, 48, 40))
    with pytest.raises(ValueError, match="mask is on meta but pred is on cpu"):
        loss(x, y, mask=torch.ones(2, 1, 48, 40, device="meta"))
    with pytest.raises(ValueError, match="mask contains NaN"):
        loss(x, y, mask=torch.full((2, 1, 48, 40), float("nan")))
    with pytest.raises(ValueError, match=r"mask values span \[-0.5, 1\]; masks are weights in \[0, 1\]"):
        loss(x, y, mask=torch.ones(2, 1, 48, 40).index_fill(3, torch.tensor([0]), -0.5))
    with pytest.raises(TypeError, match="mask has dtype torch.int64"):
        loss(x, y, mask=torch.ones(2, 1, 48, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="mask= needs spatial feature maps.*'logits'"):
        PerceptualLoss(["logits"], backbone="resnet18")(x, y, mask=torch.ones(2, 1, 48, 40))
    with pytest.raises(ValueError, match="spatial=True"):
        LPIPSLoss(net="squeeze", spatial=True)(x, y, mask=torch.ones(2, 1, 48, 40))
    mask = torch.rand(2, 1, 48, 40)
    before = mask.clone()
    loss(x, y, mask=mask)
    assert torch.equal(mask, before)


@pytest.mark.parametrize(("height", "width"), [(200, 150), (257, 301)])
@pytest.mark.parametrize("distance", ["l1", "l2", "normalized_l2"])
def test_perceptual_spatial_map_has_the_scalar_as_its_mean(height: int, width: int, distance: str) -> None:
    layers = {"relu1_2": 1.0, "relu3_3": 0.5, "pool4": 2.0}
    x, y = pair((2, 3, height, width))
    spatial = PerceptualLoss(layers, distance=distance, spatial=True, reduction="none")(x, y)
    assert spatial.shape == (2, 1, height, width)
    scalar = PerceptualLoss(layers, distance=distance, reduction="none")(x, y)
    torch.testing.assert_close(spatial.mean(dim=(1, 2, 3)), scalar, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="spatial=True needs spatial feature maps"):
        PerceptualLoss(["logits"], backbone="resnet18", spatial=True)(x[..., :64, :64], y[..., :64, :64])


INSIDE: dict[str, Callable[[], nn.Module]] = {
    "perceptual": lambda: PerceptualLoss(["conv1_1", "relu2_2", "relu3_3", "pool4"], mask_mode="inside"),
    "style": lambda: StyleLoss(["relu1_2", "relu2_2", "relu3_3"], mask_mode="inside"),
    "lpips-alex": lambda: LPIPSLoss(net="alex", mask_mode="inside"),
    "lpips-squeeze": lambda: LPIPSLoss(net="squeeze", mask_mode="inside"),
    "dists": lambda: DISTSLoss(mask_mode="inside"),
    "criterion": lambda: CombinedLoss(
        l1=1.0, tv=0.1, perceptual={"layers": ["relu2_2"]}, lpips={"net": "vgg"}, mask_mode="inside"
    ),
}


@pytest.mark.parametrize("name", sorted(INSIDE))
def test_inside_mode_ignores_every_pixel_outside_the_mask(name: str) -> None:
    loss = INSIDE[name]()

    def value(pred: torch.Tensor, mask: torch.Tensor | None = None) -> float:
        out = loss(pred, y, mask=mask)
        return float(out.total if isinstance(out, tuple) else out)

    x, y = pair((1, 3, 128, 128))
    mask = box(x.shape, 8, 120, 16, 112)
    changed = torch.where(mask.bool(), x, torch.full_like(x, 0.5))  # flat where there was noise
    inside = x.clone()
    inside[..., 40:80, 40:80] = 0.5
    before = value(x, mask)
    assert abs(value(changed, mask) - before) <= 1e-6 * abs(before), "pixels outside change nothing"
    assert abs(value(inside, mask) - before) > 1e-3 * abs(before), "the region itself counts"
    assert abs(value(changed) - value(x)) > 1e-3 * abs(value(x)), "without the mask, the changed pixels count"


def test_inside_mode_erodes_by_the_receptive_field_and_needs_a_classic_backbone() -> None:
    loss = PerceptualLoss(["conv1_1", "relu1_2", "pool1", "relu2_2"], mask_mode="inside")
    mask = box((1, 3, 32, 32), 8, 24, 8, 24)
    masks = loss.extractor.inside_masks(mask, ["conv1_1", "relu1_2", "pool1", "relu2_2"])
    assert masks["conv1_1"][0, 0].sum() == 14 * 14, "a 3x3 window: one pixel off each side"
    assert masks["relu1_2"][0, 0].sum() == 12 * 12
    assert masks["pool1"][0, 0].sum() == 6 * 6 and masks["relu2_2"][0, 0].sum() == 2 * 2
    with pytest.raises(ValueError, match="mask_mode='inside' needs the receptive fields of the classic backbones"):
        PerceptualLoss(["layer1"], backbone="resnet18", mask_mode="inside")
    with pytest.raises(ValueError, match="mask_mode='inside'.*resize"):
        PerceptualLoss(["relu2_2"], resize=64, mask_mode="inside")
    with pytest.raises(ValueError, match="Unknown mask_mode 'edge'"):
        PerceptualLoss(["relu2_2"], mask_mode="edge")


def test_perceptual_spatial_map_at_800x600() -> None:
    x, y = pair((1, 3, 600, 800))
    loss = PerceptualLoss(["relu2_2", "relu3_3"], spatial=True, reduction="none")
    spatial = loss(x, y)
    assert spatial.shape == (1, 1, 600, 800)
    torch.testing.assert_close(spatial.mean(), PerceptualLoss(["relu2_2", "relu3_3"])(x, y), rtol=1e-5, atol=1e-7)
