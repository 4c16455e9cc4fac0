"""max_memory=: a budget that picks chunk_size and tile from the trunk's activation sizes, with the same numbers."""

from __future__ import annotations

import logging

import pytest
import torch

from perceptual_loss import CombinedLoss, LPIPSLoss, PerceptualLoss, StyleLoss
from perceptual_loss.budget import activation_bytes, parse_memory

MiB = 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("1.5 GiB", int(1.5 * 2**30)), ("800M", 800 * MiB), (4096, 4096)],
)
def test_memory_sizes_parse(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["2 gigs", "-1GB", "0", "GiB", 0, -5, 2.5, True])
def test_an_unparsable_budget_names_the_option(bad: object) -> None:
    with pytest.raises(ValueError, match=r"max_memory=.* is not a memory size: write e.g. '2GiB'"):
        PerceptualLoss(["relu1_2"], weights=None, max_memory=bad)  # type: ignore[arg-type]


def test_the_estimate_bounds_what_autograd_saves() -> None:
    """The meta-device estimate equals what a real CPU forward saves, reference by reference (weights
    excluded), within 10%: the meta run sees the real graph."""
    loss = LPIPSLoss(net="vgg")
    parameters = {p.data_ptr() for p in loss.parameters()}
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if t.data_ptr() not in parameters:
            saved += t.numel() * t.element_size()
        return t

    x = torch.rand(1, 3, 96, 80, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        features = loss.extractor(x)
    real = saved + 2 * sum(f.numel() * f.element_size() for f in features.values())
    estimate = activation_bytes([loss.extractor], (3, 96, 80), torch.float32)
    assert real <= estimate <= 1.1 * real


def test_a_budget_picks_chunks_with_the_same_value_and_gradient() -> None:
    loss = LPIPSLoss(net="vgg", reduction="none")
    per_sample = activation_bytes([loss.extractor], (3, 64, 64), torch.float32)
    budgeted = LPIPSLoss(net="vgg", reduction="none", max_memory=int(2.5 * per_sample))
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.rand(5, 3, 64, 64, generator=generator), torch.rand(5, 3, 64, 64, generator=generator)
    assert budgeted.plan(pred) == (2, None)
    assert LPIPSLoss(net="vgg", max_memory=10 * per_sample).plan(pred) == (None, None)
    grads = []
    for candidate in (loss, budgeted):
        x = pred.clone().requires_grad_()
        values = candidate(x, target)
        values.sum().backward()
        grads.append((values.detach(), x.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-5 * grads[0][1].abs().max().item())


def test_a_budget_below_one_sample_tiles_where_the_loss_can() -> None:
    layers = ["relu1_2", "relu2_2"]
    loss = PerceptualLoss(layers)
    whole = activation_bytes([loss.extractor], (3, 300, 260), torch.float32)
    budgeted = PerceptualLoss(layers, max_memory=whole // 3)
    generator = torch.Generator().manual_seed(1)
    pred, target = torch.rand(1, 3, 300, 260, generator=generator), torch.rand(1, 3, 300, 260, generator=generator)
    chunk, tile = budgeted.plan(pred)
    assert chunk == 1 and tile is not None and tile % 64 == 0 and tile < 300
    torch.testing.assert_close(budgeted(pred, target), loss(pred, target), rtol=1e-5, atol=0)


def test_a_budget_too_small_for_anything_warns_once_and_runs_one_sample_at_a_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loss = StyleLoss(["relu1_2"], max_memory="1KiB")  # Gram matrices cannot tile
    pred, target = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="perceptual_loss"):
        value = loss(pred, target)
        loss(pred, target)
    assert loss.plan(pred) == (1, None)
    assert sum("below what one sample" in r.message for r in caplog.records) == 1
    torch.testing.assert_close(value, StyleLoss(["relu1_2"])(pred, target), rtol=1e-6, atol=0)


def test_criterion_budget_chunks_with_the_same_total() -> None:
    config = {"l1": 1.0, "perceptual": {"layers": ["relu2_2"], "weight": 0.5}, "lpips": {"net": "vgg", "weight": 0.1}}
    pred, target = torch.rand(4, 3, 48, 48), torch.rand(4, 3, 48, 48)
    plain = CombinedLoss(**config)
    per_sample = activation_bytes(list(plain.extractors.values()), (3, 48, 48), torch.float32)
    budgeted = CombinedLoss(**config, max_memory=2 * per_sample)
    assert budgeted._chunk_size(pred) == 2
    expected, got = plain(pred, target), budgeted(pred, target)
    torch.testing.assert_close(got.total, expected.total, rtol=1e-6, atol=0)
    assert got.parts.keys() == expected.parts.keys()


def test_budget_conflicts_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not both"):
        PerceptualLoss(["relu1_2"], weights=None, max_memory="1GiB", chunk_size=2)
    with pytest.raises(ValueError, match="not both"):
        PerceptualLoss(["relu1_2"], weights=None, max_memory="1GiB", tile=512)
    with pytest.raises(ValueError, match="spatial map"):
        LPIPSLoss(net="squeeze", weights=None, spatial=True, max_memory="1GiB")
    with pytest.raises(ValueError, match="not both"):
        CombinedLoss(l1=1.0, max_memory="1GiB", chunk_size=2)
