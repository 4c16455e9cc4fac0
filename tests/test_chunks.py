"""chunk_size= (issue 25): a loss run a few samples at a time equals the whole batch at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss

from .helpers import value_and_grads

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "perceptual": lambda: PerceptualLoss(["relu1_2", "relu3_3"], weights=None),
    "perceptual-resnet": lambda: PerceptualLoss(["layer1", "logits"], backbone="resnet18", weights=None),
    "style": lambda: StyleLoss(["relu1_2", "relu2_2"], weights=None),
    "lpips-vgg": lambda: LPIPSLoss(net="vgg", weights=None),
    "lpips-squeeze": lambda: LPIPSLoss(net="squeeze", weights=None),
    "dists": lambda: DISTSLoss(weights=None),
}
MASKABLE = ("perceptual", "style", "lpips-vgg", "dists")


def _value_and_grads(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor, chunk: int | None, **kwargs):
    loss.chunk_size = chunk
    return value_and_grads(loss, pred, target, **kwargs)


def _pair(n: int = 7, height: int = 41, width: int = 37, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(n, 3, height, width, generator=generator, dtype=dtype)
    return pred, (pred + 0.2 * torch.rand(n, 3, height, width, generator=generator, dtype=dtype)).clamp(0, 1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunked_equals_the_whole_batch(name: str, reduction: str) -> None:
    torch.manual_seed(0)  # the same random trunk whatever ran before
    loss = LOSSES[name]()
    loss.reduction = reduction
    pred, target = _pair()
    whole = _value_and_grads(loss, pred, target, None)
    chunked = _value_and_grads(loss, pred, target, 3)  # chunks of 3, 3, 1 samples
    # float32 convolutions round differently per batch size (float64 is exact, below): values
    # agree to 1e-6 of the largest
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-6 * whole[0].abs().max().item())
    # float32 convolutions round differently per batch size: gradients agree to 3e-5 of the largest
    torch.testing.assert_close(chunked[1], whole[1], rtol=0, atol=3e-5 * whole[1].abs().max().item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunked_is_exact_in_float64_also_with_a_target_that_requires_grad(name: str) -> None:
    loss = LOSSES[name]().double()
    pred, target = _pair(n=5, dtype=torch.float64)
    target.requires_grad_()
    whole = _value_and_grads(loss, pred, target, None)
    chunked = _value_and_grads(loss, pred, target, 2)
    for ours, reference in zip(chunked, whole):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", MASKABLE)
def test_chunked_with_masks_per_sample_and_shared(name: str) -> None:
    loss = LOSSES[name]().double()
    pred, target = _pair(n=5, height=48, width=40, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    for mask in (torch.rand(5, 1, 48, 40, generator=generator, dtype=torch.float64), torch.ones(1, 1, 48, 40) > 0):
        whole = _value_and_grads(loss, pred, target, None, mask=mask)
        chunked = _value_and_grads(loss, pred, target, 2, mask=mask)
        torch.testing.assert_close(chunked[:2], whole[:2], rtol=1e-10, atol=1e-13)


def test_one_style_image_for_every_prediction() -> None:
    loss = StyleLoss(["relu1_2"], weights=None).double()
    pred = torch.rand(5, 3, 32, 32, dtype=torch.float64)
    style = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    whole = _value_and_grads(loss, pred, style, None)
    chunked = _value_and_grads(loss, pred, style, 2)
    torch.testing.assert_close(chunked[:2], whole[:2], rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="target shared by every sample that requires grad"):
        loss(pred, style.requires_grad_())


def test_no_gradient_work_under_no_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    loss = PerceptualLoss(["relu1_2"], weights=None, chunk_size=2)
    pred, target = _pair(n=5)
    expected = loss(pred, target)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("autograd.grad called")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    with torch.no_grad():
        value = loss(pred.requires_grad_(), target)
    assert value.grad_fn is None and torch.equal(value, expected)


def test_a_double_backward_is_a_clear_error() -> None:
    loss = PerceptualLoss(["relu1_2"], weights=None, chunk_size=2)
    pred, target = _pair(n=4)
    pred.requires_grad_()
    (grad,) = torch.autograd.grad(loss(pred, target), pred)  # a first-order gradient is fine
    assert grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match=r"cannot be differentiated twice \(create_graph=True"):
        torch.autograd.grad(loss(pred, target), pred, create_graph=True)


def test_under_autocast_chunks_equal_the_whole_batch() -> None:
    loss = LPIPSLoss(net="squeeze", weights=None)
    pred, target = _pair(n=6, height=64, width=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        whole = _value_and_grads(loss, pred, target, None)
        chunked = _value_and_grads(loss, pred, target, 4)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(chunked[1], whole[1], rtol=0, atol=2e-2 * whole[1].abs().max().item())
    assert chunked[1].dtype == torch.float32 and chunked[1].isfinite().all()


def test_bad_chunk_sizes_name_the_option() -> None:
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match=r"chunk_size must be a positive int \(samples per chunk\) or None"):
            PerceptualLoss(["relu1_2"], weights=None, chunk_size=bad)
    with pytest.raises(ValueError, match="spatial maps cannot be chunked"):
        LPIPSLoss(net="squeeze", weights=None, spatial=True, chunk_size=2)


def _criterion_run(criterion: CombinedLoss, chunk: int | None, pred: torch.Tensor, target: torch.Tensor, **kwargs):
    criterion.chunk_size = chunk
    pred = pred.detach().requires_grad_()
    total, parts = criterion(pred, target, **kwargs)
    total.backward()
    return total.detach(), parts, pred.grad


def test_criterion_chunked_equals_the_whole_batch_with_masks_and_cached_targets() -> None:
    criterion = CombinedLoss(
        l1=1.0, charbonnier=0.5, tv=0.01,
        perceptual={"layers": ["relu2_2"], "weight": 0.1},
        style={"layers": ["relu1_2"], "weight": 10.0},
        lpips={"net": "vgg", "weight": 0.2},
        weights=None,
    ).double()  # fmt: skip
    pred, target = _pair(n=7, dtype=torch.float64)
    mask = torch.rand(7, 1, 41, 37, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    whole = _criterion_run(criterion, None, pred, target, mask=mask)
    chunked = _criterion_run(criterion, 3, pred, target, mask=mask)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=0)
    assert chunked[1].keys() == whole[1].keys() == {"l1", "charbonnier", "tv", "perceptual", "style", "lpips"}
    for name in whole[1]:
        torch.testing.assert_close(chunked[1][name], whole[1][name], rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked[2], whole[2], rtol=1e-10, atol=1e-15)

    criterion.set_target(torch.rand(1, 3, 48, 48, dtype=torch.float64), terms=["style"])  # one style image
    criterion.set_target(target, terms=["perceptual", "l1"])  # a batch of cached targets, cut per chunk
    whole = _criterion_run(criterion, None, pred, target)
    chunked = _criterion_run(criterion, 2, pred, target)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked[2], whole[2], rtol=1e-10, atol=1e-15)


def test_criterion_chunks_under_an_adaptive_adversarial_term() -> None:
    generator = nn.Conv2d(3, 3, 3, padding=1).double()
    criterion = CombinedLoss(
        l1=1.0, perceptual={"layers": ["relu1_2"]}, adversarial={"kind": "hinge", "adaptive": True}, weights=None
    ).double()
    x, target = _pair(n=5, height=32, width=32, dtype=torch.float64)
    results = []
    for chunk in (None, 2):
        criterion.chunk_size = chunk
        generator.zero_grad()
        pred = generator(x)
        total, parts = criterion(pred, target, fake_logits=pred.mean(dim=(1, 2, 3)), last_layer=generator.weight)
        total.backward()
        results.append((total.detach(), parts["adversarial_weight"], generator.weight.grad.clone()))
    for ours, reference in zip(results[1], results[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-14)


@pytest.mark.slow
def test_a_compiled_chunked_loss_equals_eager() -> None:
    loss = PerceptualLoss(["relu1_2"], weights=None, chunk_size=2, check_inputs=False)
    pred, target = _pair(n=5, height=32, width=32)
    eager = _value_and_grads(loss, pred, target, 2)
    compiled = torch.compile(loss)
    pred = pred.detach().requires_grad_()
    value = compiled(pred, target)
    (0.5 * value).backward()  # the weight _value_and_grads gives a scalar
    torch.testing.assert_close(value.detach(), eager[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(pred.grad, eager[1], rtol=1e-6, atol=1e-9)
