"""The same contracts on a GPU: cuDNN, the split Gram product, fp16 autocast, device errors.

Everything else in the suite runs on the CPU. These tests run only where CUDA is available (CI
has no GPU, so they are skipped there); they were run on a lent H100 machine.
``PERCEPTUAL_LOSS_TEST_DEVICE=cpu`` runs them on the CPU, to debug the tests themselves. TF32 is
switched off, so that cuDNN's float32 convolutions are comparable to 1e-5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models
from torchvision.models.squeezenet import Fire

from perceptual_loss import (
    CombinedLoss,
    FeatureExtractor,
    LPIPSLoss,
    PerceptualLoss,
    StyleLoss,
    evaluate_folders,
    gram_matrix,
    lpips_distance,
    normalize_channels,
)

from .helpers import saved_tensors, storage_bytes
from .test_criterion import FULL, count_passes, separate_total
from .test_lpips_parity import reference_input_gradient, reference_lpips

DEVICE = os.environ.get("PERCEPTUAL_LOSS_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "")
pytestmark = pytest.mark.skipif(not DEVICE, reason="needs a CUDA device (or PERCEPTUAL_LOSS_TEST_DEVICE)")


@pytest.fixture(autouse=True)
def no_tf32() -> Iterator[None]:
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _pair(shape: tuple[int, ...] = (3, 3, 64, 48), seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    return x, (x + 0.2 * torch.randn(shape, generator=generator)).clamp(0, 1)


@pytest.mark.parametrize("version", ["0.1", "0.0"])
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_equals_reference_on_device(net: str, version: str) -> None:
    x, y = (t.to(DEVICE) for t in _pair())
    ours = LPIPSLoss(net=net, version=version, reduction="none").to(DEVICE)(x, y)
    reference = reference_lpips(net, version).to(DEVICE)
    reference.spatial = False
    with torch.no_grad():
        expected = reference(2 * x - 1, 2 * y - 1).flatten()
    reference.cpu()
    assert ours.device.type == torch.device(DEVICE).type and (expected > 1e-3).all()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_input_gradients_equal_reference_on_device(net: str) -> None:
    """Against lpips run in float64 on the device (see test_lpips_parity for why float64)."""
    x, y = (t.to(DEVICE) for t in _pair())
    expected = reference_input_gradient(net, x, y)
    pred = x.clone().requires_grad_(True)
    LPIPSLoss(net=net, reduction="sum").to(DEVICE)(pred, y).backward()
    scale = expected.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(pred.grad.double(), expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PerceptualLoss({"relu2_2": 1.0, "conv4_3": 0.5}, distance="l2"),
        lambda: PerceptualLoss(["conv5_4"], backbone="vgg19"),
        lambda: StyleLoss(["relu1_2", "relu3_3"]),
        lambda: LPIPSLoss(net="squeeze", spatial=True),
        lambda: PerceptualLoss(["bn1", "layer2", "logits"], backbone="resnet18"),  # traced, BatchNorm
    ],
    ids=["perceptual", "perceptual-vgg19", "style", "lpips-spatial", "perceptual-resnet18"],
)
def test_device_values_and_gradients_equal_the_cpu_ones(make) -> None:
    """cuDNN and oneDNN, the split and the single Gram product: the two devices agree.

    Values agree to float precision. Gradients pass through max-pools, whose argmax can flip
    between devices where two inputs differ by rounding only; each flip moves a gradient entry to
    a neighbour (seen on an H100: VGG19 conv5_4, 5% of entries, up to 1.3% of the largest
    gradient). So gradients must agree closely in direction and everywhere to 2% of the largest.
    """
    x, y = _pair((2, 3, 64, 64))
    loss = make()
    results = []
    for device in ("cpu", DEVICE):
        loss.to(device)
        pred = x.to(device, copy=True).requires_grad_(True)
        value = loss(pred, y.to(device))
        value.sum().backward()
        results.append((value.detach().cpu(), pred.grad.cpu()))
    (cpu_value, cpu_grad), (device_value, device_grad) = results
    assert cpu_value.abs().sum() > 0
    torch.testing.assert_close(device_value, cpu_value, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(device_grad, cpu_grad, rtol=0, atol=2e-2 * cpu_grad.abs().max().item())
    cosine = torch.nn.functional.cosine_similarity(device_grad.flatten(), cpu_grad.flatten(), dim=0)
    assert cosine > 0.999, f"gradients point apart (cosine {cosine:.5f})"


def test_device_runs_channels_last_and_the_gradient_keeps_the_input_layout() -> None:
    extractor = FeatureExtractor("vgg16", ["relu2_2"]).to(DEVICE)
    conv_weights = [m.weight for m in extractor.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in conv_weights)
    x = torch.rand(2, 3, 32, 32, device=DEVICE, requires_grad=True)
    features = extractor(x)["relu2_2"]
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    features.sum().backward()
    assert x.grad is not None and x.grad.is_contiguous()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_functional_forms_on_device_equal_the_cpu_in_either_layout(layout: torch.memory_format) -> None:
    """gram_matrix (on CUDA a sum of 3 chunk products at this size) and lpips_distance."""
    generator = torch.Generator().manual_seed(3)
    pred, target = (torch.randn(4, 64, 64, 48, generator=generator).relu() for _ in range(2))
    head = torch.rand(1, 64, 1, 1, generator=generator)
    results = []
    for device in ("cpu", DEVICE):
        f = pred.to(device, copy=True).contiguous(memory_format=layout).requires_grad_(True)
        t = normalize_channels(target.to(device).contiguous(memory_format=layout))
        gram = gram_matrix(f)
        value = lpips_distance({"x": f}, {"x": t}, {"x": head.to(device)})
        (gram.square().sum() + value.sum()).backward()
        results.append([r.detach().cpu() for r in (gram, value, f.grad)])
    for cpu, device in zip(*results):
        torch.testing.assert_close(device, cpu, rtol=1e-5, atol=1e-6 * cpu.abs().max().item())


@pytest.mark.parametrize(("backbone", "tap"), [("vgg16", "relu5_3"), ("alexnet", "relu5"), ("squeezenet1_1", "fire9")])
def test_pools_and_fires_keep_less_and_match_torchvision_on_device(backbone: str, tap: str) -> None:
    extractor = FeatureExtractor(backbone, [tap], weights=None).to(DEVICE)
    reference = getattr(models, backbone)(weights=None).features[: len(extractor.layers)]
    reference.load_state_dict(extractor.layers.state_dict())
    reference.eval().requires_grad_(False).to(DEVICE, memory_format=torch.channels_last)  # as ours runs
    x = torch.rand(2, 3, 80, 72, device=DEVICE)
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    ours_saved = saved_tensors(lambda: outputs.update(ours=extractor(ours_x)[tap]))
    normalized = (ref_x * extractor.scale + extractor.shift).contiguous(memory_format=torch.channels_last)
    ref_saved = saved_tensors(lambda: outputs.update(ref=reference(normalized)))
    assert not [t for t in ours_saved.values() if t.dtype == torch.int64]
    assert [t for t in ref_saved.values() if t.dtype == torch.int64]
    assert storage_bytes(ours_saved.values()) < storage_bytes(ref_saved.values())
    assert any(isinstance(m, Fire) for m in extractor.modules()) == (backbone == "squeezenet1_1")
    assert torch.equal(outputs["ours"], outputs["ref"])
    grad = torch.randn_like(outputs["ref"])
    (outputs["ours"] * grad).sum().backward()
    (outputs["ref"] * grad).sum().backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=0, atol=1e-6 * ref_x.grad.abs().max().item())


def test_style_gram_stays_float32_under_fp16_autocast() -> None:
    """Activations of a few hundred overflow a Gram matrix written in fp16; ours is float32.

    Random weights give activations near 1 and gradients near 1e-10, which fp16 flushes to zero
    (as it would any loss's, without a GradScaler): the first convolution is scaled by 100 to give
    activations of the size trained weights give.
    """
    loss = StyleLoss(["relu1_2", "relu2_2"]).to(DEVICE)
    first = loss.extractor.layers[0]
    first.weight.data.mul_(100.0)
    first.bias.data.mul_(100.0)
    x, y = (t.to(DEVICE) for t in _pair((2, 3, 64, 64)))
    autocast_type = torch.device(DEVICE).type
    dtype = torch.float16 if autocast_type == "cuda" else torch.bfloat16
    reference_pred = x.clone().requires_grad_(True)
    reference = loss(reference_pred, y)
    reference.backward()
    pred = x.clone().requires_grad_(True)
    with torch.autocast(autocast_type, dtype=dtype):
        value = loss(pred, y)
        features = loss.extractor(x)["relu1_2"]
    assert features.dtype == dtype and features.abs().max() > 100
    if dtype == torch.float16:
        rows = features.flatten(2)
        assert not torch.isfinite(torch.bmm(rows, rows.transpose(1, 2))).all(), "an fp16 Gram overflows here"
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, reference, rtol=2e-2, atol=0)
    value.backward()
    assert torch.isfinite(pred.grad).all()
    cosine = torch.nn.functional.cosine_similarity(pred.grad.flatten(), reference_pred.grad.flatten(), dim=0)
    assert cosine > 0.99, f"the fp16 gradient points elsewhere than the float32 one (cosine {cosine:.3f})"


def test_combined_loss_on_device_equals_its_terms_with_one_pass_per_side() -> None:
    x, y = (t.to(DEVICE) for t in _pair((2, 3, 64, 64)))
    criterion = CombinedLoss(**FULL).to(DEVICE)
    counts = count_passes(criterion)
    pred = x.clone().requires_grad_(True)
    total, parts = criterion(pred, y)
    assert list(counts.values()) == [2], "one VGG pass for pred, one for target"
    expected_total, expected_parts = separate_total(x, y)
    assert sorted(parts) == sorted(expected_parts)
    for name, value in expected_parts.items():
        torch.testing.assert_close(parts[name], value, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(total.detach(), expected_total, rtol=1e-5, atol=1e-7)
    total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_inputs_on_another_device_are_a_clear_error() -> None:
    if torch.device(DEVICE).type == "cpu":
        pytest.skip("needs a second device")
    loss = PerceptualLoss(["relu1_2"]).to(DEVICE)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="target is on cpu"):
        loss(x.to(DEVICE), x)
    with pytest.raises(ValueError, match=r"loss is on cuda.*loss\.to\('cpu'\)"):
        loss(x, x)


def test_to_device_and_back_keeps_the_state_dict_empty() -> None:
    loss = LPIPSLoss(net="squeeze").to(DEVICE)
    tensors = [*loss.parameters(), *loss.buffers()]
    assert tensors and all(t.device.type == torch.device(DEVICE).type and not t.requires_grad for t in tensors)
    assert loss.state_dict() == {}
    loss.train()
    assert loss.training and all(m.training for m in loss.extractor.modules())  # squeeze ignores the flag


def test_evaluator_on_device_equals_the_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    for index, size in enumerate([(48, 40), (48, 40), (64, 64)]):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        noisy = np.clip(image.astype(int) + rng.integers(-30, 31, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "a" / f"{index}.png")
        Image.fromarray(noisy).save(tmp_path / "b" / f"{index}.png")
    on_cpu = evaluate_folders(tmp_path / "a", tmp_path / "b", device="cpu")
    on_device = evaluate_folders(tmp_path / "a", tmp_path / "b", device=DEVICE)
    assert len(on_device.rows) == len(on_cpu.rows) == 3 and not on_device.failures
    for row_device, row_cpu in zip(on_device.rows, on_cpu.rows):
        assert row_device["name"] == row_cpu["name"]
        for metric in ("lpips", "psnr", "ssim"):
            assert abs(float(row_device[metric]) - float(row_cpu[metric])) <= 1e-5 * max(
                1.0, abs(float(row_cpu[metric]))
            )
