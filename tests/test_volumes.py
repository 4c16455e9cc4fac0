"""3-D networks (MedicalNet's architecture from MONAI) as backbones, tapped by name on 5-D volumes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perceptual_loss import FeatureExtractor, PerceptualLoss

monai_nets = pytest.importorskip("monai.networks.nets", reason="monai is in the [test] extra")
monai_perceptual = pytest.importorskip("monai.losses.perceptual")


def medicalnet(channels: int = 1, seed: int = 0) -> nn.Module:
    """MedicalNet's ResNet-10 (random weights: mechanics and parity only), in eval mode."""
    torch.manual_seed(seed)
    return monai_nets.resnet10(spatial_dims=3, n_input_channels=channels, feed_forward=False).eval()


def standardize(volume: torch.Tensor) -> torch.Tensor:
    """MedicalNet's (and MONAI's) intensity normalisation: the whole tensor to zero mean, unit std."""
    return (volume - volume.mean()) / volume.std()


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def test_taps_of_a_3d_module_equal_its_own_intermediate_outputs() -> None:
    net = medicalnet()
    taps = ["layer1", "layer2.0.conv1", "layer4"]
    extractor = FeatureExtractor(net, taps, normalize=False)
    volume = torch.rand(2, 1, 20, 28, 24)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        net.get_submodule(t).register_forward_hook(lambda m, a, out, t=t: seen.__setitem__(t, out.clone()))
        for t in taps
    ]
    with torch.no_grad():
        net(volume)
        features = extractor(volume)
    for handle in handles:
        handle.remove()
    assert list(features) == taps
    for tap in taps:
        assert features[tap].dim() == 5
        torch.testing.assert_close(features[tap], seen[tap], rtol=1e-5, atol=1e-6)


def test_medicalnet_recipe_equals_monais_formula_on_the_same_module() -> None:
    """MONAI's MedicalNetPerceptualSimilarity (volume standardised, channel-normalised layer4
    features, squared difference summed over channels, spatial mean) on the same ResNet-10."""
    net = medicalnet()
    reference = monai_perceptual.MedicalNetPerceptualSimilarity.__new__(monai_perceptual.MedicalNetPerceptualSimilarity)
    nn.Module.__init__(reference)
    reference.model = nn.Sequential(
        net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    reference.channel_wise = False
    loss = PerceptualLoss(["layer4"], backbone=net, normalize=False, distance="normalized_l2", check_inputs=False)
    pred, target = _pair((2, 1, 24, 32, 28))
    with torch.no_grad():
        expected = reference(pred, target).mean()
    value = loss(standardize(pred), standardize(target))
    assert expected > 1e-3
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)


def test_volumes_train_through_a_3d_module_which_stays_untouched() -> None:
    net = medicalnet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = PerceptualLoss(["layer2", "layer3"], backbone=net, normalize=False, channels="each")
    pred, target = _pair((1, 2, 16, 16, 16))
    pred.requires_grad_()
    value = loss(pred, target)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    by_channel = [
        PerceptualLoss(["layer2", "layer3"], backbone=net, normalize=False)(pred[:, [c]], target[:, [c]])
        for c in (0, 1)
    ]
    torch.testing.assert_close(value, sum(by_channel) / 2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(p.grad is not None for p in net.parameters())


def test_3d_module_errors_name_the_fix() -> None:
    net = medicalnet()
    with pytest.raises(ValueError, match="normalize=False"):
        PerceptualLoss(["layer4"], backbone=net)
    with pytest.raises(ValueError, match="resample them before the loss"):
        PerceptualLoss(["layer4"], backbone=net, normalize=False, resize=64)
    loss = PerceptualLoss(["layer4"], backbone=net, normalize=False)
    pred, target = _pair((1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="channels='each'"):
        loss(pred, target)
    with pytest.raises(ValueError, match=r"5-D \(N, 1, D, H, W\)"):
        loss(pred[:, :1, 0], target[:, :1, 0])
    with pytest.raises(ValueError, match="mask= weighs 2-D images"):
        loss(pred[:, :1], target[:, :1], mask=torch.ones(1, 1, 16, 16, 16))
    own = PerceptualLoss(["layer4"], backbone=net, mean=[0.5], std=[0.25])
    assert own.extractor.scale.shape == (1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="give one per channel"):
        PerceptualLoss(["layer4"], backbone=net, mean=[0.5, 0.4], std=[0.25, 0.2])
