"""GAN losses: documented signs, and a tiny generator/discriminator pair trains with each kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perceptual_loss import ADVERSARIAL_KINDS, CombinedLoss, discriminator_loss, generator_loss


@pytest.mark.parametrize("kind", ADVERSARIAL_KINDS)
def test_signs(kind: str) -> None:
    """Each side's loss is lower when that side is winning."""
    high, low = torch.full((4, 1), 3.0), torch.full((4, 1), -3.0)
    # the discriminator wins when real logits are high and fake logits low
    assert discriminator_loss(high, low, kind) < discriminator_loss(low, high, kind)
    # the generator wins when its fakes score high (relative to reals, for the relativistic kind)
    assert generator_loss(high, low, kind) < generator_loss(low, high, kind)


def test_known_values() -> None:
    zeros = torch.zeros(3)
    log2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(generator_loss(zeros, kind="vanilla"), log2)
    torch.testing.assert_close(discriminator_loss(zeros, zeros, "vanilla"), 2 * log2)
    torch.testing.assert_close(discriminator_loss(zeros, zeros, "hinge"), torch.tensor(2.0))
    torch.testing.assert_close(discriminator_loss(torch.ones(3), zeros, "lsgan"), torch.tensor(0.0))
    torch.testing.assert_close(discriminator_loss(torch.full((3,), 2.0), zeros, "wgan"), torch.tensor(-2.0))
    torch.testing.assert_close(generator_loss(zeros, zeros, "relativistic"), log2)


def test_relativistic_generator_needs_real_logits() -> None:
    with pytest.raises(ValueError, match="needs the discriminator's logits on real images"):
        generator_loss(torch.zeros(2), kind="relativistic")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="Unknown adversarial kind 'bce'"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), "bce")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ADVERSARIAL_KINDS)
def test_tiny_gan_trains_with_each_kind(kind: str) -> None:
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1), nn.Sigmoid())
    discriminator = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, stride=2))
    criterion = CombinedLoss(
        l1=1.0, perceptual={"layers": ["relu1_2"], "weight": 0.1},
        adversarial={"kind": kind, "weight": 0.1, "adaptive": kind == "hinge"},
    )  # fmt: skip
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    for step in range(3):
        lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        fake = generator(lr)
        real_logits = discriminator(hr).detach() if kind == "relativistic" else None
        total, parts = criterion(fake, hr, fake_logits=discriminator(fake), real_logits=real_logits, step=step,
                                 last_layer=generator[2].weight)  # fmt: skip
        g_opt.zero_grad()
        total.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
        g_opt.step()
        d_loss = discriminator_loss(discriminator(hr), discriminator(fake.detach()), kind)
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        assert torch.isfinite(total) and torch.isfinite(d_loss)
        assert torch.isfinite(parts["adversarial"])
