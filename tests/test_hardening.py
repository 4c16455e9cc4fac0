"""Hardening: no NaN/Inf for any valid input, documented errors for invalid input, gradcheck,
determinism, safe weight files, and no memory growth over thousands of steps."""

from __future__ import annotations

import functools
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from perceptual_loss import (
    CombinedLoss,
    DISTSLoss,
    FeatureExtractor,
    InvalidWeightsError,
    LPIPSLoss,
    PerceptualLoss,
    StyleLoss,
)
from perceptual_loss.weights import imagenet_weights_path

SHALLOW_TAPS = ["relu1_1", "conv1_2", "relu1_2", "pool1", "relu2_1", "conv2_2", "relu2_2"]
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def make_loss(
    kind: str, layers: tuple[str, ...] = ("relu1_2",), input_range: tuple[float, float] = (0.0, 1.0)
) -> nn.Module:
    if kind == "perceptual":
        return PerceptualLoss(list(layers), input_range=input_range)
    if kind == "perceptual_l2":
        return PerceptualLoss(list(layers), distance="l2", input_range=input_range)
    if kind == "style":
        return StyleLoss(list(layers), input_range=input_range)
    if kind == "lpips":
        return LPIPSLoss(net="squeeze", input_range=input_range)
    if kind == "dists":
        return DISTSLoss(input_range=input_range)
    return CombinedLoss(
        l1=1.0, charbonnier=1.0, perceptual={"layers": list(layers)}, style={"layers": list(layers)}, tv=0.1,
        input_range=input_range,
    )  # fmt: skip


KINDS = ["perceptual", "perceptual_l2", "style", "lpips", "criterion"]
FINITE_KINDS = [*KINDS, "dists"]  # DISTS has no layer choice and takes 1x1 images: not in the shape tests


def call(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = loss(pred, target)
    return out.total if isinstance(out, tuple) else out


def images(pattern: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if pattern == "uniform":
        return torch.rand(shape, generator=generator)
    if pattern == "zeros":
        return torch.zeros(shape)
    if pattern == "ones":
        return torch.ones(shape)
    if pattern == "constant":
        return torch.full(shape, 0.37)
    if pattern == "tiny_noise":
        return 0.5 + 1e-6 * torch.randn(shape, generator=generator)
    return (torch.rand(shape, generator=generator) > 0.5).float()  # saturated binary


PATTERNS = ["uniform", "zeros", "ones", "constant", "tiny_noise", "binary"]


def assert_finite_value_and_gradient(
    loss: nn.Module, pred: torch.Tensor, target: torch.Tensor, autocast: torch.dtype | None = None
) -> None:
    pred = pred.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        value = call(loss, pred, target)
    value.backward()
    assert torch.isfinite(value), value
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(FINITE_KINDS),
    layer=st.sampled_from(SHALLOW_TAPS),
    batch=st.integers(1, 3),
    extra=st.tuples(st.integers(0, 9), st.integers(0, 9)),
    patterns=st.tuples(st.sampled_from(PATTERNS), st.sampled_from(PATTERNS)),
    seed=st.integers(0, 2**16),
    autocast=st.sampled_from([None, torch.bfloat16, torch.float16]),
    input_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]),
)
def test_valid_input_never_gives_nan_or_inf(kind, layer, batch, extra, patterns, seed, autocast, input_range) -> None:
    loss = make_loss(kind, (layer,), input_range)
    minimum = loss.min_size
    shape = (batch, 3, minimum + extra[0], minimum + extra[1])
    low, high = input_range
    pred, target = (images(p, shape, seed + i) * (high - low) + low for i, p in enumerate(patterns))
    assert_finite_value_and_gradient(loss, pred, target, autocast)


@PROPERTY_SETTINGS
@given(kind=st.sampled_from(FINITE_KINDS), size=st.integers(8, 20), seed=st.integers(0, 1000))
def test_float64_is_finite_and_close_to_float32(kind, size, seed) -> None:
    loss = make_loss(kind)
    pred, target = (
        images("uniform", (2, 3, size + 9, size + 9), seed),
        images("uniform", (2, 3, size + 9, size + 9), seed + 1),
    )
    loss64 = loss.to(torch.float64)
    try:
        value64 = call(loss64, pred.double(), target.double())
    finally:
        loss.to(torch.float32)
    value32 = call(loss, pred, target)
    assert torch.isfinite(value64)
    torch.testing.assert_close(value64.float(), value32, rtol=1e-3, atol=1e-7)


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    shape=st.one_of(
        st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)),  # 3-D
        st.tuples(st.integers(1, 2), st.sampled_from([2, 4, 5]), st.integers(32, 40), st.integers(32, 40)),  # channels
        st.tuples(st.integers(1, 2), st.just(3), st.integers(1, 7), st.integers(32, 40)),  # too small
    ),
)
def test_invalid_shapes_always_give_a_value_error(kind, shape) -> None:
    loss = make_loss(kind, ("relu2_2",))
    if len(shape) == 4 and shape[1] == 3 and shape[2] >= loss.min_size:
        return  # not invalid for this loss
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=r"must be 4-D|3 channels|too small"):
        call(loss, x, x.clone())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("kind", KINDS)
def test_integer_input_always_gives_a_type_error(kind, dtype) -> None:
    x = torch.ones(1, 3, 32, 32, dtype=dtype)
    with pytest.raises(TypeError, match="floating-point"):
        call(make_loss(kind), x, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_edge_images_against_themselves_and_noise(kind, pattern) -> None:
    loss = make_loss(kind)
    shape = (1, 3, 32, 32)
    edge = images(pattern, shape, 3)
    assert_finite_value_and_gradient(loss, edge, edge.clone())
    assert_finite_value_and_gradient(loss, edge, images("uniform", shape, 4))
    assert_finite_value_and_gradient(loss, images("uniform", shape, 5), edge)
    if isinstance(loss, CombinedLoss):  # TV and Charbonnier's eps are not zero at identity
        parts = loss(edge, edge.clone()).parts
        assert [parts[k].item() for k in ("l1", "perceptual", "style")] == [0.0, 0.0, 0.0]
        assert parts["charbonnier"].item() == pytest.approx(1e-3)
    else:
        assert call(loss, edge, edge.clone()).item() == 0.0


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_lpips_edge_images_have_finite_gradients(net) -> None:
    loss = LPIPSLoss(net=net)
    for pattern in PATTERNS:
        edge = images(pattern, (1, 3, 32, 32), 6)
        assert_finite_value_and_gradient(loss, edge, edge.clone())
        assert_finite_value_and_gradient(loss, edge, images("uniform", (1, 3, 32, 32), 7))


@pytest.mark.parametrize(
    ("name", "make", "size"),
    [
        ("perceptual", lambda: PerceptualLoss(["relu1_2", "conv2_1"]), 4),
        ("perceptual_l2", lambda: PerceptualLoss(["relu1_2"], distance="l2"), 4),
        ("style", lambda: StyleLoss(["relu1_2", "relu2_1"]), 4),
        ("lpips", lambda: LPIPSLoss(net="squeeze"), 17),
        ("criterion", lambda: CombinedLoss(l1=1.0, charbonnier=1.0, perceptual={"layers": ["relu1_2"]}, tv=0.1), 4),
    ],
)
def test_gradcheck_float64(name, make, size) -> None:
    loss = make().to(torch.float64)
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 3, size, size, dtype=torch.float64, generator=generator).requires_grad_(True)
    target = torch.rand(1, 3, size, size, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda p: call(loss, p, target), (pred,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_on_cpu(kind) -> None:
    loss = make_loss(kind)
    x, y = images("uniform", (2, 3, 40, 40), 8), images("uniform", (2, 3, 40, 40), 9)
    grads = []
    values = []
    for _ in range(2):
        pred = x.clone().requires_grad_(True)
        value = call(loss, pred, y)
        value.backward()
        values.append(value.detach())
        grads.append(pred.grad)
    assert torch.equal(values[0], values[1]) and torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------- weight files


def test_truncated_weights_file_names_the_file(tmp_path: Path) -> None:
    good = imagenet_weights_path("squeezenet1_1").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(InvalidWeightsError, match="truncated.pth"):
        FeatureExtractor("squeezenet1_1", ["relu1"], weights=path)


def test_download_asks_torch_to_verify_the_published_checksum(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def fake_download(url, destination, hash_prefix=None, progress=True):
        seen.update(url=url, hash_prefix=hash_prefix)
        raise urllib.error.URLError("offline")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(FileNotFoundError):
        FeatureExtractor("vgg16", ["relu1_1"])
    assert seen == {"url": "https://download.pytorch.org/models/vgg16-397923af.pth", "hash_prefix": "397923af"}


# ---------------------------------------------------------------- memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_two_thousand_steps_keep_memory_flat() -> None:
    loss = CombinedLoss(l1=1.0, perceptual={"layers": ["relu1_1"]}, style={"layers": ["relu1_1"]})
    net = nn.Conv2d(3, 3, 3, padding=1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)

    def step() -> None:
        total, _ = loss(torch.sigmoid(net(x)), y)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()

    for _ in range(200):  # warm-up: allocator pools, lazy init
        step()
    before = _rss_bytes()
    for _ in range(2000):
        step()
    growth = _rss_bytes() - before
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 2000 steps"
