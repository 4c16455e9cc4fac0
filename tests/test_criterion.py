"""CombinedLoss: equal to the separate terms, one backbone pass per view, cached targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perceptual_loss import (
    CombinedLoss,
    LPIPSLoss,
    PerceptualLoss,
    StyleLoss,
    charbonnier_distance,
    generator_loss,
    total_variation,
)

FULL = {
    "l1": 1.0,
    "l2": 0.5,
    "charbonnier": 0.25,
    "perceptual": {"layers": {"relu2_2": 1.0, "conv3_3": 0.5}, "weight": 0.1},
    "style": {"layers": ["relu1_2", "relu3_3"], "weight": 1e3},
    "lpips": {"net": "vgg", "weight": 0.3},
    "tv": 0.01,
}


def separate_total(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    parts = {
        "l1": (pred - target).abs().mean(),
        "l2": ((pred - target) ** 2).mean(),
        "charbonnier": charbonnier_distance(pred, target).mean(),
        "perceptual": PerceptualLoss({"relu2_2": 1.0, "conv3_3": 0.5}).to(pred.device)(pred, target),
        "style": StyleLoss(["relu1_2", "relu3_3"]).to(pred.device)(pred, target),
        "lpips": LPIPSLoss(net="vgg").to(pred.device)(pred, target),
        "tv": total_variation(pred).mean(),
    }
    weights = {"l1": 1.0, "l2": 0.5, "charbonnier": 0.25, "perceptual": 0.1, "style": 1e3, "lpips": 0.3, "tv": 0.01}
    return sum(weights[k] * v for k, v in parts.items()), parts


def count_passes(criterion: CombinedLoss) -> dict[str, int]:
    counts = dict.fromkeys(criterion.extractors, 0)
    for key, extractor in criterion.extractors.items():

        def hook(module, args, key=key):
            counts[key] += 1

        extractor.layers[0].register_forward_pre_hook(hook)
    return counts


def test_equals_the_sum_of_separate_terms(images) -> None:
    x, y = images
    total, parts = CombinedLoss(**FULL)(x, y)
    expected_total, expected_parts = separate_total(x, y)
    assert sorted(parts) == sorted(expected_parts)
    for name, value in expected_parts.items():
        torch.testing.assert_close(parts[name], value, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=1e-7)


def test_one_extractor_and_one_pass_per_side_for_vgg_terms(images) -> None:
    x, y = images
    criterion = CombinedLoss(**FULL)
    assert len(criterion.extractors) == 1, "perceptual, style and LPIPS-vgg v0.1 share VGG16"
    extractor = next(iter(criterion.extractors.values()))
    assert len(extractor.layers) == 30, "truncated at relu5_3, LPIPS-vgg's deepest tap"
    counts = count_passes(criterion)
    criterion(x.clone().requires_grad_(True), y)
    assert list(counts.values()) == [2], "one pass for pred, one for target"


def test_views_that_differ_get_their_own_extractor(images) -> None:
    criterion = CombinedLoss(
        perceptual={"layers": ["relu1_2"], "backbone": "vgg19"},
        lpips={"net": "vgg", "version": "0.0"},
        style={"layers": ["relu1_1"]},
    )
    views = sorted((e.backbone, round(float(e.shift[0, 0]), 3)) for e in criterion.extractors.values())
    assert views == [("vgg16", -2.118), ("vgg16", -1.0), ("vgg19", -2.118)]
    counts = count_passes(criterion)
    criterion(*images)
    assert list(counts.values()) == [2, 2, 2]


def test_target_side_has_no_graph(images) -> None:
    x, y = images
    criterion = CombinedLoss(perceptual={"layers": ["relu2_2"]})
    outputs = []
    criterion.extractors["vgg16_0"].layers[8].register_forward_hook(lambda m, a, out: outputs.append(out))
    criterion(x.clone().requires_grad_(True), y)
    assert sorted(out.requires_grad for out in outputs) == [False, True], "one pass with a graph (pred), one without"


def test_cached_target_skips_the_target_pass(images) -> None:
    x, y = images
    criterion = CombinedLoss(**FULL)
    expected = criterion(x, y).total
    criterion.set_target(y)
    counts = count_passes(criterion)
    total, _ = criterion(x)
    assert list(counts.values()) == [1], "only the prediction runs"
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-8)
    criterion.clear_target()
    with pytest.raises(ValueError, match=r"target is required: the terms \['l1', 'l2', 'charbonnier', 'perceptual'"):
        criterion(x)


def test_style_transfer_content_and_style_targets(images) -> None:
    """Gatys: content vs the content image, style vs a cached style image of another size."""
    content, _ = images
    style = torch.rand(1, 3, 80, 72)
    criterion = CombinedLoss(perceptual={"layers": ["relu4_2"], "weight": 1.0}, style={"weight": 1e4}, tv=1e-3)
    criterion.set_target(style, terms=["style"])
    pred = torch.rand_like(content)
    total, parts = criterion(pred, content)
    torch.testing.assert_close(parts["style"], StyleLoss()(pred, style), rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(parts["perceptual"], PerceptualLoss(["relu4_2"])(pred, content), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match=r"Cannot cache a target for \['lpips'\]"):
        criterion.set_target(style, terms=["lpips"])


def test_style_only_criterion_accepts_other_sizes() -> None:
    criterion = CombinedLoss(style={"layers": ["relu2_2"]})
    assert torch.isfinite(criterion(torch.rand(2, 3, 32, 32), torch.rand(1, 3, 48, 40)).total)
    with pytest.raises(ValueError, match="same shape"):
        CombinedLoss(l1=1.0, style={"layers": ["relu2_2"]})(torch.rand(2, 3, 32, 32), torch.rand(1, 3, 48, 40))


def test_zero_weight_terms_are_not_built() -> None:
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"], "weight": 0.0}, lpips=None, tv=0)
    assert len(criterion.extractors) == 0 and list(criterion.comparisons) == []
    total, parts = criterion(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    assert list(parts) == ["l1"] and total.item() == 1.0
    with pytest.raises(ValueError, match="no term"):
        CombinedLoss()


def test_bad_term_options() -> None:
    with pytest.raises(TypeError, match="Bad option for the perceptual term.*layer"):
        CombinedLoss(perceptual={"layer": ["relu2_2"]})
    with pytest.raises(ValueError, match="Unknown layer name"):
        CombinedLoss(style={"layers": ["relu9_1"]})
    with pytest.raises(ValueError, match="Unknown adversarial kind 'softplus'"):
        CombinedLoss(adversarial={"kind": "softplus"})
    with pytest.raises(TypeError, match="Unknown adversarial option"):
        CombinedLoss(adversarial={"kind": "hinge", "warmup": 10})
    with pytest.raises(ValueError, match="spatial is not supported"):
        CombinedLoss(lpips={"net": "alex", "spatial": True})


def test_state_dict_is_empty_and_frozen(images) -> None:
    criterion = CombinedLoss(**FULL)
    assert criterion.state_dict() == {}
    assert all(not p.requires_grad for p in criterion.parameters())
    criterion.eval()
    with torch.no_grad():
        expected = criterion(images[0], images[1]).total
    criterion.train()
    pred = images[0].clone().requires_grad_(True)
    total = criterion(pred, images[1]).total
    total.backward()
    torch.testing.assert_close(total.detach(), expected, rtol=0, atol=0)  # the mode changes nothing
    assert pred.grad is not None and all(p.grad is None for p in criterion.parameters())


def test_input_checks_apply(images) -> None:
    x, y = images
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu5_3"]})
    with pytest.raises(ValueError, match="clearly outside input_range"):
        criterion(x, y * 255)
    with pytest.raises(ValueError, match="at least 16"):
        criterion(x[..., :8, :8], y[..., :8, :8])
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        criterion(x, (y * 255).byte())


def test_bfloat16_autocast_each_term_within_2e_2(images) -> None:
    x, y = images
    criterion = CombinedLoss(**FULL)
    _, exact = criterion(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, approx = criterion(x, y)
    for name, value in exact.items():
        assert torch.isfinite(approx[name]), name
        torch.testing.assert_close(approx[name], value, rtol=2e-2, atol=0, msg=name)


def test_compiles_without_graph_breaks(images) -> None:
    x, y = images
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"]}, lpips={"net": "squeeze"}, tv=0.1)
    compiled = torch.compile(criterion, fullgraph=True, backend="aot_eager")
    pred = x.clone().requires_grad_(True)
    total, parts = compiled(pred, y)
    total.backward()
    torch.testing.assert_close(total, criterion(x, y).total, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(pred.grad).all()


def test_hydra_config_builds_it(images) -> None:
    hydra_utils = pytest.importorskip("hydra.utils")
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create(
        """
        _target_: perceptual_loss.CombinedLoss
        l1: 1.0
        perceptual: {layers: [relu2_2, relu3_3], weight: 0.1}
        lpips: {net: vgg, weight: 0.1}
        """
    )
    criterion = hydra_utils.instantiate(config)
    reference = CombinedLoss(
        l1=1.0, perceptual={"layers": ["relu2_2", "relu3_3"], "weight": 0.1}, lpips={"net": "vgg", "weight": 0.1}
    )
    torch.testing.assert_close(criterion(*images).total, reference(*images).total)


# ---------------------------------------------------------------- the GAN generator objective


class TinyGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.last = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.last(self.body(x)))


def test_adaptive_weight_matches_the_vqgan_formula(images) -> None:
    x, y = images
    generator, discriminator = TinyGenerator(), nn.Sequential(nn.Conv2d(3, 1, 4, stride=4))
    criterion = CombinedLoss(
        l1=1.0, perceptual={"layers": ["relu1_2"]}, adversarial={"kind": "hinge", "weight": 0.5, "adaptive": True}
    )
    pred = generator(x)
    fake = discriminator(pred)
    total, parts = criterion(pred, y, fake_logits=fake, last_layer=generator.last.weight)
    reconstruction = parts["l1"] + parts["perceptual"]
    rec = torch.autograd.grad(
        (pred - y).abs().mean() + PerceptualLoss(["relu1_2"])(pred, y), generator.last.weight, retain_graph=True
    )[0]
    adv = torch.autograd.grad(-fake.mean(), generator.last.weight, retain_graph=True)[0]
    expected = (rec.norm() / (adv.norm() + 1e-4)).clamp(0, 1e4)
    torch.testing.assert_close(parts["adversarial_weight"], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(total, reconstruction + 0.5 * expected * parts["adversarial"], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="needs last_layer"):
        criterion(generator(x), y, fake_logits=discriminator(generator(x)))


def test_warm_up_leaves_the_adversarial_term_out(images) -> None:
    x, y = images
    criterion = CombinedLoss(l1=1.0, adversarial={"kind": "vanilla", "weight": 0.1, "start_step": 100})
    logits = torch.zeros(2, 1)
    before = criterion(x, y, fake_logits=logits, step=99)
    after = criterion(x, y, fake_logits=logits, step=100)
    assert "adversarial" not in before.parts and not criterion.adversarial_active(99)
    torch.testing.assert_close(after.total - before.total, 0.1 * generator_loss(logits, kind="vanilla"))
