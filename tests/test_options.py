"""The options every loss shares are declared once (perceptual_loss.losses.options) and checked."""

from __future__ import annotations

import inspect

import pytest
import torch

from perceptual_loss import CombinedLoss, DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss
from perceptual_loss.losses.options import READ_OPTIONS, VIEW_OPTIONS

LOSSES = {
    PerceptualLoss: {"layers": ["relu1_2"]},
    StyleLoss: {"layers": ["relu1_2"]},
    LPIPSLoss: {"net": "squeeze"},
    DISTSLoss: {},
}


@pytest.mark.parametrize("cls", list(LOSSES), ids=lambda c: c.__name__)
def test_no_loss_repeats_a_shared_option_in_its_signature(cls: type) -> None:
    own = set(inspect.signature(cls).parameters) - {"options"}
    assert own & (VIEW_OPTIONS | READ_OPTIONS) <= ({"resize"} if cls is DISTSLoss else set())
    assert inspect.signature(cls).parameters["options"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("cls", list(LOSSES), ids=lambda c: c.__name__)
def test_every_loss_takes_the_read_options(cls: type) -> None:
    loss = cls(
        **LOSSES[cls], weights=None, reduction="none", input_range=(-1, 1), grayscale="repeat", check_inputs=False,
        mask_mode="area", normalize="imagenet",
    )  # fmt: skip
    assert (loss.reduction, loss.grayscale, loss.check_inputs, loss.extractor.input_range) == (
        "none",
        "repeat",
        False,
        (-1.0, 1.0),
    )
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    assert loss(x, x.flip(-1)).shape == (2,)


@pytest.mark.parametrize("cls", list(LOSSES), ids=lambda c: c.__name__)
def test_an_unknown_option_names_the_valid_ones(cls: type) -> None:
    with pytest.raises(
        TypeError, match=r"got an unexpected keyword argument 'reductoin'; its shared options are .*reduction"
    ):
        cls(**LOSSES[cls], weights=None, reductoin="sum")


def test_dists_refuses_the_options_its_pools_and_resize_fix() -> None:
    with pytest.raises(TypeError, match=r"DISTSLoss got an unexpected keyword argument 'pooling'"):
        DISTSLoss(weights=None, pooling="max")
    with pytest.raises(TypeError, match=r"Bad option for the dists term: .*'pool_stride'"):
        CombinedLoss(dists={"pool_stride": 1}, weights=None)


def test_criterion_terms_take_the_view_options() -> None:
    criterion = CombinedLoss(
        perceptual={"layers": ["relu1_2"], "normalize": "clip", "resize": 32},
        lpips={"net": "squeeze", "normalize": False},
        weights=None,
    )
    assert len(criterion.extractors) == 2
    total, _ = criterion(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40))
    assert total.isfinite()
