"""GAN losses for both sides, and VQGAN's adaptive adversarial weight.

Every function returns a scalar **to be minimised** by the side it is named after:

- :func:`generator_loss` is minimised by the generator (pass the discriminator's logits on the
  generated images, and on real images for the relativistic kind);
- :func:`discriminator_loss` is minimised by the discriminator (logits on real and on generated
  images; detach the generated images before the discriminator sees them).

Kinds (``kind=``), with ``r`` = logits on real images, ``f`` = logits on generated images:

======================  =====================================================  =========================================
kind                    generator                                              discriminator
======================  =====================================================  =========================================
``"vanilla"``           non-saturating ``softplus(-f)`` (= BCE(f, 1))          ``softplus(-r) + softplus(f)``
``"lsgan"``             ``(f - 1)^2``                                          ``(r - 1)^2 + f^2``
``"hinge"``             ``-f``                                                 ``relu(1 - r) + relu(1 + f)``
``"wgan"``              ``-f``                                                 ``f - r`` (add your own gradient penalty)
``"relativistic"``      ``[BCE(r - E f, 0) + BCE(f - E r, 1)] / 2`` (ESRGAN)   ``[BCE(r - E f, 1) + BCE(f - E r, 0)] / 2``
======================  =====================================================  =========================================

(means over all logits; computed in float32.)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

AdversarialKind = Literal["vanilla", "lsgan", "hinge", "wgan", "relativistic"]
ADVERSARIAL_KINDS = ("vanilla", "lsgan", "hinge", "wgan", "relativistic")


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"Unknown adversarial kind {kind!r}; choose one of {ADVERSARIAL_KINDS}.")


def _bce(logits: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def generator_loss(fake_logits: Tensor, real_logits: Tensor | None = None, kind: AdversarialKind = "vanilla") -> Tensor:
    """The generator's adversarial loss (minimise it); ``real_logits`` only for ``"relativistic"``.

    Shape: logits of any shape (e.g. ``(N, 1)`` or a PatchGAN ``(N, 1, h, w)``) -> ``()``.
    """
    _check_kind(kind)
    f = fake_logits.float()
    if kind == "vanilla":
        return F.softplus(-f).mean()
    if kind == "lsgan":
        return (f - 1).square().mean()
    if kind in ("hinge", "wgan"):
        return -f.mean()
    if real_logits is None:
        raise ValueError(
            "The relativistic generator loss needs the discriminator's logits on real images too: "
            "pass real_logits=discriminator(real).detach()."
        )
    r = real_logits.float()
    return (_bce(r - f.mean(), 0.0) + _bce(f - r.mean(), 1.0)) / 2


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: AdversarialKind = "vanilla") -> Tensor:
    """The discriminator's loss (minimise it), from logits on real and on generated images -> ``()``."""
    _check_kind(kind)
    r, f = real_logits.float(), fake_logits.float()
    if kind == "vanilla":
        return F.softplus(-r).mean() + F.softplus(f).mean()
    if kind == "lsgan":
        return (r - 1).square().mean() + f.square().mean()
    if kind == "hinge":
        return F.relu(1 - r).mean() + F.relu(1 + f).mean()
    if kind == "wgan":
        return f.mean() - r.mean()
    return (_bce(r - f.mean(), 1.0) + _bce(f - r.mean(), 0.0)) / 2


def adaptive_weight(reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN's adaptive weight: ``||grad rec|| / (||grad adv|| + 1e-4)`` at ``last_layer``, clamped, detached.

    Balances the adversarial term against the reconstruction terms by the size of their gradients
    at the generator's last layer (Esser et al., 2021).

    Args:
        reconstruction: the scalar reconstruction loss (pixel + perceptual terms).
        adversarial: the scalar generator adversarial loss.
        last_layer: the weight tensor of the generator's last layer (must be in both graphs).

    Returns:
        ``()`` tensor in ``[0, max_weight]``, without gradient.
    """
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (adv_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
