"""The behaviour a training loop relies on, for each of the three losses."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import nn

from perceptual_loss import DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss, gram_matrix
from perceptual_loss.backbones import TAPS
from perceptual_loss.weights import imagenet_weights_path

from .helpers import run_to, torchvision_features

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "perceptual": lambda **kw: PerceptualLoss(["relu1_2", "relu2_2", "conv3_3"], **kw),
    "style": lambda **kw: StyleLoss(["relu1_2", "relu2_2"], **kw),
    "lpips": lambda **kw: LPIPSLoss(net="squeeze", **kw),
    "dists": lambda **kw: DISTSLoss(**kw),
    # a traced torchvision backbone with BatchNorm, a pre-activation tap and logits
    "perceptual-resnet18": lambda **kw: PerceptualLoss(["bn1", "layer2", "logits"], backbone="resnet18", **kw),
}


@pytest.fixture(params=sorted(LOSSES))
def make(request: pytest.FixtureRequest) -> Callable[..., nn.Module]:
    return LOSSES[request.param]


# ---------------------------------------------------------------- values


def test_zero_at_identity(make, images) -> None:
    x, _ = images
    assert make()(x, x.clone()).item() == 0.0


def test_positive_for_different_images(make, images) -> None:
    assert make()(*images).item() > 0


def test_reduction_shapes(make, images) -> None:
    x, y = images
    per_sample = make(reduction="none")(x, y)
    assert per_sample.shape == (2,)
    torch.testing.assert_close(make(reduction="mean")(x, y), per_sample.mean())
    torch.testing.assert_close(make(reduction="sum")(x, y), per_sample.sum())
    torch.testing.assert_close(make(reduction="none")(x[1:], y[1:]), per_sample[1:], rtol=1e-5, atol=1e-7)


def test_unknown_reduction(make) -> None:
    with pytest.raises(ValueError, match="Unknown reduction 'avg'.*mean"):
        make(reduction="avg")


def test_lpips_spatial_map_shape(images) -> None:
    x, y = images
    spatial = LPIPSLoss(net="squeeze", spatial=True, reduction="none")(x, y)
    assert spatial.shape == (2, 1, 64, 64)
    assert LPIPSLoss(net="squeeze", spatial=True)(x, y).shape == ()


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_perceptual_equals_direct_torchvision(distance: str, images) -> None:
    x, y = images
    layers = {"relu1_2": 1.0, "conv3_3": 0.5, "pool4": 2.0}
    ours = PerceptualLoss(layers, distance=distance, reduction="none")(x, y)
    reference = torchvision_features("vgg16", imagenet_weights_path("vgg16"))
    indices = {name: TAPS["vgg16"][name] for name in layers}
    fx, fy = run_to(reference, x, indices), run_to(reference, y, indices)
    expected = sum(
        w * ((fx[n] - fy[n]).abs() if distance == "l1" else (fx[n] - fy[n]) ** 2).mean(dim=(1, 2, 3))
        for n, w in layers.items()
    )
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_esrgan_recipe_vgg19_conv5_4(images) -> None:
    x, y = images
    loss = PerceptualLoss({"conv5_4": 1.0}, backbone="vgg19")
    reference = torchvision_features("vgg19", imagenet_weights_path("vgg19"))
    fx, fy = (run_to(reference, z, {"c": 34})["c"] for z in (x, y))
    torch.testing.assert_close(loss(x, y), (fx - fy).abs().mean(), rtol=1e-5, atol=1e-6)


def test_style_equals_direct_gram(images) -> None:
    x, y = images
    layers = {"relu1_2": 1.0, "relu3_3": 3.0}
    ours = StyleLoss(layers, reduction="none")(x, y)
    reference = torchvision_features("vgg16", imagenet_weights_path("vgg16"))
    indices = {name: TAPS["vgg16"][name] for name in layers}
    fx, fy = run_to(reference, x, indices), run_to(reference, y, indices)

    def gram(f: torch.Tensor) -> torch.Tensor:
        n, c, h, w = f.shape
        flat = f.reshape(n, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)

    expected = sum(w * ((gram(fx[n]) - gram(fy[n])) ** 2).mean(dim=(1, 2)) for n, w in layers.items())
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-9)


def test_style_target_of_another_size_and_batch_one(images) -> None:
    x, _ = images
    style = torch.rand(1, 3, 40, 56)
    loss = StyleLoss(reduction="none")
    both = loss(x, style)
    assert both.shape == (2,)
    torch.testing.assert_close(both[1:], loss(x[1:], style), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="batch size 1 or the same as pred"):
        loss(x, torch.rand(3, 3, 40, 40))


def test_layer_weights_are_linear(images) -> None:
    x, y = images
    a = PerceptualLoss(["relu1_2"])(x, y)
    b = PerceptualLoss(["relu2_2"])(x, y)
    combined = PerceptualLoss({"relu1_2": 2.0, "relu2_2": 0.5})(x, y)
    torch.testing.assert_close(combined, 2.0 * a + 0.5 * b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        ("relu2_2", TypeError, r"not a string; use \['relu2_2'\]"),
        ([], ValueError, "layers is empty"),
        (["relu1_2", "relu1_2"], ValueError, "more than once"),
        ({"relu1_2": -1.0}, ValueError, "finite and >= 0"),
        (["relu9_9"], ValueError, "Unknown layer name.*relu9_9.*valid names"),
    ],
)
def test_bad_layers(layers, error, match) -> None:
    with pytest.raises(error, match=match):
        PerceptualLoss(layers)


def test_bad_distance() -> None:
    with pytest.raises(ValueError, match="Unknown distance 'l3'"):
        PerceptualLoss(distance="l3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown distance 'cos'"):
        StyleLoss(distance="cos")  # type: ignore[arg-type]


def test_bad_lpips_options() -> None:
    with pytest.raises(ValueError, match="Unknown LPIPS net 'resnet'"):
        LPIPSLoss(net="resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown LPIPS version '0.2'"):
        LPIPSLoss(version="0.2")  # type: ignore[arg-type]


# ---------------------------------------------------------------- gradients and graphs


def test_gradients_reach_the_input_and_nothing_else(make, images) -> None:
    x, y = images
    loss = make()
    pred = x.clone().requires_grad_(True)
    loss(pred, y).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())


def test_second_order_gradients_are_refused_not_wrong(make, images) -> None:
    """The hand-written backwards (pools, LPIPS layer, Gram) are first-order: a second backward
    through them raises PyTorch's error rather than returning a wrong (e.g. zero) gradient."""
    x, y = images
    pred = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(make()(pred, y), pred, create_graph=True)
    assert grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.square().sum().backward()


def test_target_side_builds_no_graph(make, images) -> None:
    x, y = images
    loss = make()
    pred = x.clone().requires_grad_(True)
    assert all(f.grad_fn is None and not f.requires_grad for f in loss.target_features(y).values())
    assert all(f.requires_grad for f in loss.extractor(pred).values())  # DISTS' "input" tap is pred itself


def test_target_that_requires_grad_gets_gradients(make, images) -> None:
    """Comparing two generated images (e.g. LPIPS as a regulariser) must train both sides."""
    x, y = images
    pred, target = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    make()(pred, target).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_inputs_are_not_modified(make, images) -> None:
    x, y = images
    before = (x.clone(), y.clone())
    make()(x, y)
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])


# ---------------------------------------------------------------- frozen, eval, checkpoints


class Generator(nn.Module):
    """A tiny model that owns its loss, as users do (and Lightning checkpoints it)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.criterion = loss


def test_frozen_and_eval_locked_inside_a_training_model(make) -> None:
    model = Generator(make())
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.criterion(x, y)
    model.train()
    assert model.training and model.criterion.training
    with torch.no_grad():
        torch.testing.assert_close(model.criterion(x, y), expected, rtol=0, atol=0)  # no dropout, no statistics
    pinned = [n for n, m in model.criterion.named_modules() if not m.training]
    assert pinned == [], f"the classic networks ignore the mode flag, so it follows the parent: {pinned}"
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["body.weight", "body.bias"]


def test_state_dict_holds_no_backbone_and_strict_reload_works(make, tmp_path) -> None:
    model = Generator(make())
    state = model.state_dict()
    assert sorted(state) == ["body.bias", "body.weight"]
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    fresh = Generator(make())
    frozen_before = {k: v.clone() for k, v in fresh.criterion.named_parameters()}
    result = fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(fresh.body.weight, model.body.weight)
    assert all(torch.equal(v, dict(fresh.criterion.named_parameters())[k]) for k, v in frozen_before.items())


def test_old_checkpoint_with_backbone_keys_loads_without_overwriting(images) -> None:
    """Checkpoints from libraries that saved the VGG still load strictly; the backbone stays ours."""
    model = Generator(PerceptualLoss(["relu1_2"]))
    state = dict(model.state_dict())
    state["criterion.extractor.layers.0.weight"] = torch.zeros(64, 3, 3, 3)
    mine = model.criterion.extractor.layers[0].weight.clone()
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.criterion.extractor.layers[0].weight, mine)


def test_missing_trainable_keys_are_still_reported(make) -> None:
    model = Generator(make())
    state = model.state_dict()
    del state["body.bias"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"body.bias\""):
        model.load_state_dict(state, strict=True)


def test_to_float64_and_back(make, images) -> None:
    x, y = images
    loss = make().to(torch.float64)
    value = loss(x.double(), y.double())
    assert value.dtype == torch.float64
    torch.testing.assert_close(value.float(), make()(x, y), rtol=1e-4, atol=1e-7)


def test_dtype_mismatch_names_the_fix(make, images) -> None:
    x, y = images
    with pytest.raises(
        TypeError, match=r"pred has dtype torch.float64 but the loss's weights are torch.float32.*loss.to"
    ):
        make()(x.double(), y.double())


def test_bfloat16_autocast_stays_close_to_float32(make, images) -> None:
    x, y = images
    loss = make()
    exact = loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = loss(x, y)
    assert approx.dtype == torch.float32, "comparisons are computed in float32"
    assert torch.isfinite(approx)
    torch.testing.assert_close(approx, exact, rtol=5e-2, atol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_matrix_equals_the_plain_formula_with_its_gradient(layout: torch.memory_format) -> None:
    """The custom backward ((g + g^T) F / CHW, one matmul) against autograd on the textbook formula."""
    torch.manual_seed(0)
    base = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    features = base.clone().contiguous(memory_format=layout).requires_grad_(True)
    reference = base.clone().requires_grad_(True)
    weights = torch.randn(2, 5, 5, dtype=torch.float64)  # not symmetric: exercises g + g^T
    (gram_matrix(features) * weights).sum().backward()
    flat = reference.reshape(2, 5, 12)
    (((flat @ flat.transpose(1, 2)) / 60) * weights).sum().backward()
    torch.testing.assert_close(gram_matrix(features), (flat @ flat.transpose(1, 2) / 60).detach())
    torch.testing.assert_close(features.grad, reference.grad)
    assert torch.autograd.gradcheck(gram_matrix, (features.detach().requires_grad_(True),))


@pytest.mark.parametrize("shape", [(2, 64, 64, 64), (1, 8, 96, 100), (3, 4, 5, 7), (20, 16, 32, 32)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_split_k_gram_equals_one_product(shape: tuple[int, ...], layout: torch.memory_format) -> None:
    """The chunked product CUDA uses (it runs only there) equals the plain one, any size and layout."""
    from perceptual_loss.distances.gram import _as_rows, _split_k_gram

    features = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    rows = _as_rows(features)
    torch.testing.assert_close(_split_k_gram(rows), rows.transpose(1, 2) @ rows)


def test_gram_matrix_does_not_overflow_in_half_precision() -> None:
    features = torch.full((1, 4, 64, 64), 200.0, dtype=torch.float16)
    gram = gram_matrix(features)
    assert gram.dtype == torch.float32 and torch.isfinite(gram).all()
    torch.testing.assert_close(gram, torch.full((1, 4, 4), 200.0**2 / 4), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- input checks


def test_not_a_tensor(make, images) -> None:
    with pytest.raises(TypeError, match=r"pred must be a torch.Tensor of shape \(N, 3, H, W\); got ndarray"):
        make()(images[0].numpy(), images[1])


def test_three_dimensional_input(make, images) -> None:
    with pytest.raises(ValueError, match=r"must be 4-D.*got shape \(3, 64, 64\).*unsqueeze\(0\)"):
        make()(images[0][0], images[1][0])


def test_integer_dtype(make) -> None:
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"dtype torch.uint8.*x.float\(\) / 255"):
        make()(x, x)


def test_wrong_channels(make) -> None:
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 4, 64, 64\)"):
        make()(torch.rand(1, 4, 64, 64), torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="grayscale='repeat'"):
        make()(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))


def test_grayscale_repeat_equals_rgb_copy(make) -> None:
    gray, other = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    loss = make(grayscale="repeat")
    torch.testing.assert_close(loss(gray, other), loss(gray.repeat(1, 3, 1, 1), other.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="grayscale must be None or 'repeat'"):
        make(grayscale="average")


def test_mismatched_shapes(images) -> None:
    x, y = images
    for loss in (LOSSES["perceptual"](), LOSSES["lpips"]()):
        with pytest.raises(ValueError, match=r"same shape; got \(2, 3, 64, 64\) and \(2, 3, 64, 32\)"):
            loss(x, y[..., :32])


def test_different_devices(make, images) -> None:
    x, y = images
    with pytest.raises(ValueError, match="pred is on meta but target is on cpu; move both to one device"):
        make()(torch.empty(2, 3, 64, 64, device="meta"), y)
    with pytest.raises(ValueError, match=r"Inputs are on meta but the loss is on cpu; call loss.to\('meta'\)"):
        make()(torch.empty(2, 3, 64, 64, device="meta"), torch.empty(2, 3, 64, 64, device="meta"))


def test_too_small_for_the_layers() -> None:
    loss = PerceptualLoss(["relu2_2", "relu5_3"])
    assert loss.min_size == 16
    loss(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(
        ValueError, match=r"pred of size 15x40 is too small for layers \['relu2_2', 'relu5_3'\] of vgg16.*at least 16"
    ):
        loss(torch.rand(1, 3, 15, 40), torch.rand(1, 3, 15, 40))
    with pytest.raises(ValueError, match="at least 31"):
        LPIPSLoss(net="alex")(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))


@pytest.mark.parametrize(
    ("scale", "shift", "hint"),
    [(255.0, 0.0, r"\[0, 255\] data: divide by 255"), (2.0, -1.0, r"\[-1, 1\] data: use input_range=\(-1, 1\)")],
)
def test_target_outside_range_is_an_error(make, images, scale, shift, hint) -> None:
    x, y = images
    with pytest.raises(
        ValueError, match="target values span.*clearly outside input_range=\\(0, 1\\). This looks like " + hint
    ):
        make()(x, y * scale + shift)


def test_range_check_can_be_switched_off(make, images) -> None:
    x, y = images
    assert torch.isfinite(make(check_inputs=False)(x * 255, y * 255))


def test_range_tolerates_resampling_overshoot(make, images) -> None:
    x, y = images
    make()(x * 1.2 - 0.1, y * 1.2 - 0.1)


def test_minus_one_one_range_accepted_when_declared(make, images) -> None:
    x, y = images
    loss = make(input_range=(-1, 1))
    torch.testing.assert_close(loss(2 * x - 1, 2 * y - 1), make()(x, y), rtol=1e-4, atol=1e-7)


def test_prediction_out_of_range_warns_once(make, images, caplog) -> None:
    x, y = images
    loss = make()
    caplog.set_level(logging.WARNING, logger="perceptual_loss")
    loss(x * 255, y)
    loss(x * 255, y)
    warnings = [r for r in caplog.records if "pred values span" in r.getMessage()]
    assert len(warnings) == 1 and "divide by 255" in warnings[0].getMessage()


def test_target_with_nan_is_an_error(make, images) -> None:
    x, y = images
    y = y.clone()
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target contains NaN or Inf"):
        make()(x, y)


def test_vqgan_order_an_overshooting_reconstruction_second_only_warns(make, images, caplog) -> None:
    """taming/VQGAN call loss(inputs, reconstructions): the output, which requires grad, is second."""
    x, y = images
    loss = make(input_range=(-1, 1))
    reconstruction = (1.6 * (2 * y - 1)).requires_grad_()  # a decoder without tanh overshoots
    caplog.set_level(logging.WARNING, logger="perceptual_loss")
    value = loss(2 * x - 1, reconstruction)
    value.backward()
    assert torch.isfinite(value) and reconstruction.grad is not None
    loss(2 * x - 1, reconstruction)
    warnings = [r for r in caplog.records if "target values span" in r.getMessage()]
    assert len(warnings) == 1 and "[0, 255]" not in warnings[0].getMessage()
    with pytest.raises(ValueError, match="target values span"):  # the same values as data: an error
        loss(2 * x - 1, reconstruction.detach())


@pytest.mark.parametrize(
    ("span", "input_range", "expected", "not_expected"),
    [
        ((-1.99, 2.01), (-1.0, 1.0), "Rescale the images to (-1, 1)", "[0, 255]"),
        ((0.0, 255.0), (0.0, 1.0), "[0, 255] data", "[-1, 1]"),
        ((-1.0, 1.0), (0.0, 1.0), "[-1, 1] data", "[0, 255]"),
    ],
)
def test_range_hints_name_the_likely_range(make, span, input_range, expected, not_expected) -> None:
    low, high = span
    target = torch.linspace(low, high, 3 * 32 * 32).view(1, 3, 32, 32)
    pred = input_range[0] + (input_range[1] - input_range[0]) * torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError) as error:
        make(input_range=input_range)(pred, target)
    assert expected in str(error.value) and not_expected not in str(error.value)


@pytest.mark.parametrize("span", [(-0.4, 1.3), (-0.1, 1.6)])
def test_an_overshooting_output_is_not_called_data(make, images, caplog, span) -> None:
    """The SR demo's early outputs: a warning about overshoot, never "[-1, 1] data"."""
    x, _ = images
    low, high = span
    pred = torch.linspace(low, high, x.numel()).view_as(x).requires_grad_()
    caplog.set_level(logging.WARNING, logger="perceptual_loss")
    make()(pred, x)
    (message,) = [r.getMessage() for r in caplog.records if "values span" in r.getMessage()]
    assert "overshoots" in message and "data" not in message


def test_fro_distance_is_the_frobenius_norm_per_sample_and_basicsr_for_one_image() -> None:
    """BasicSR's criterion 'fro': torch.norm(features(x) - features(gt), p='fro') per layer."""
    layers = {"relu2_2": 1.0, "relu3_3": 0.5}
    loss = PerceptualLoss(layers, distance="fro", reduction="none", weights=None)
    x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        fx, fy = loss.extractor(x), loss.extractor(y)
        expected = sum(w * (fx[k] - fy[k]).flatten(1).norm(dim=1) for k, w in layers.items())
        torch.testing.assert_close(loss(x, y), expected, rtol=1e-5, atol=0)
        basicsr = sum(w * torch.norm(fx[k][:1] - fy[k][:1], p="fro") for k, w in layers.items())
        torch.testing.assert_close(loss(x[:1], y[:1])[0], basicsr, rtol=1e-5, atol=0)
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :16, :] = 1
        masked = PerceptualLoss(layers, distance="fro", reduction="none", weights=None, mask_mode="inside")
        inside = masked.extractor.inside_masks(mask, list(layers))
        fx, fy = masked.extractor(x), masked.extractor(y)  # its own random weights
        expected_masked = sum(
            w * ((fx[k] - fy[k]) * inside[k].sqrt()).flatten(1).norm(dim=1) for k, w in layers.items()
        )
        torch.testing.assert_close(masked(x, y, mask=mask), expected_masked, rtol=1e-5, atol=0)
    pred = y.clone().requires_grad_()
    value = loss(pred, y).sum()
    value.backward()
    assert value.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))  # no NaN at identity
    with pytest.raises(ValueError, match="'fro' is a norm"):
        PerceptualLoss(["relu2_2"], distance="fro", spatial=True, weights=None)
    with pytest.raises(ValueError, match="Unknown distance 'frobenius' for PerceptualComparison.*'fro'"):
        PerceptualLoss(["relu2_2"], distance="frobenius", weights=None)
