"""Edges every loss meets in practice: empty batches, NaN from a diverged network."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch

from perceptual_loss import (
    CombinedLoss,
    DISTSLoss,
    LPIPSLoss,
    PerceptualLoss,
    SlicedLoss,
    StyleLoss,
    TemporalLPIPS,
)

LOSSES: dict[str, Callable[..., Any]] = {
    "perceptual": lambda **kw: PerceptualLoss(["relu1_2", "relu2_2"], **kw),
    "style": lambda **kw: StyleLoss(["relu1_2"], **kw),
    "lpips": lambda **kw: LPIPSLoss(net="squeeze", **kw),
    "dists": lambda **kw: DISTSLoss(**kw),
    "perceptual_chunked": lambda **kw: PerceptualLoss(["relu2_2"], chunk_size=2, **kw),
    "lpips_budget": lambda **kw: LPIPSLoss(net="squeeze", max_memory="1GiB", **kw),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_an_empty_batch_gives_zero_and_zero_gradients(name: str, reduction: str) -> None:
    """N = 0 (a filtered batch, an empty DDP shard): ``none`` -> ``(0,)``, ``mean`` and ``sum`` -> 0, attached."""
    loss = LOSSES[name](reduction=reduction)
    pred = torch.rand(0, 3, 32, 32, requires_grad=True)
    value = loss(pred, torch.rand(0, 3, 32, 32), mask=torch.ones(0, 1, 32, 32))
    if reduction == "none":
        assert value.shape == (0,)
    else:
        assert value.shape == () and value.item() == 0.0
    value.sum().backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


def test_empty_batches_in_the_criterion_slices_and_time() -> None:
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"]}, lpips={"net": "squeeze"}, tv=1.0)
    pred = torch.rand(0, 3, 32, 32, requires_grad=True)
    total, parts = criterion(pred, torch.rand(0, 3, 32, 32))
    total.backward()
    assert total.item() == 0.0 and all(v.item() == 0.0 for v in parts.values()) and pred.grad is not None
    clip = torch.rand(0, 3, 4, 32, 32)
    for ratio in (None, 0.5):
        assert SlicedLoss(LPIPSLoss(net="squeeze"), dims=(2,), ratio=ratio)(clip, clip).item() == 0.0
    assert TemporalLPIPS(net="squeeze", reduction="none")(clip, clip).shape == (0,)
    sliced = CombinedLoss(l1=1.0, lpips={"net": "squeeze"}, slices={"dims": (2,), "per_sample": 2})
    assert sliced(clip, clip).total.item() == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_in_pred_warns_once_naming_a_diverged_network(bad: float, caplog: pytest.LogCaptureFixture) -> None:
    loss = PerceptualLoss(["relu1_2"])
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    pred[0, 0, 0, 0] = bad
    with caplog.at_level(logging.WARNING, logger="perceptual_loss"):
        loss(pred, target)
        loss(pred, target)
    warnings = [r.message for r in caplog.records if "NaN or Inf" in r.message]
    assert len(warnings) == 1 and "diverged" in warnings[0] and warnings[0].startswith("pred")
    criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu1_2"]})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="perceptual_loss"):
        criterion(pred, target)
    assert any("diverged" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="target contains NaN"):
        loss(target, pred)
