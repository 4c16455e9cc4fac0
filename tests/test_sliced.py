"""SlicedLoss: any image loss on clips and volumes, equal to MONAI's 2.5-D loss and to frames stacked by hand."""

from __future__ import annotations

import pytest
import torch

from perceptual_loss import LPIPSLoss, PerceptualLoss, SlicedLoss, Slicing, take_slices

monai_perceptual = pytest.importorskip("monai.losses.perceptual", reason="monai is in the [test] extra")


def _pair(shape: tuple[int, ...], seed: int = 0, low: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator)
    y = (x + 0.3 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return x * (1 - low) + low, y * (1 - low) + low


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_equals_monai_fake_3d_perceptual_loss(net: str, channels: int) -> None:
    """MONAI's PerceptualLoss(is_fake_3d=True, fake_3d_ratio=1.0) runs ``lpips.LPIPS`` with the
    same hub-cache trunk and shipped heads on every slice of all three axes, [-1, 1] input."""
    reference = monai_perceptual.PerceptualLoss(
        spatial_dims=3, network_type=net, is_fake_3d=True, fake_3d_ratio=1.0
    ).eval()
    ours = SlicedLoss(LPIPSLoss(net=net, input_range=(-1, 1), grayscale="repeat"), dims=(2, 3, 4), ratio=1.0)
    x, y = _pair((2, channels, 32, 36, 40), seed=channels)
    x, y = 2 * x - 1, 2 * y - 1
    with torch.no_grad():
        expected = reference(x, y)
    value = ours(x, y)
    assert expected > 1e-3, "the volumes differ, so the comparison is not trivially zero"
    torch.testing.assert_close(value, expected, rtol=0, atol=1e-5)


def test_frames_equal_the_loss_of_the_frames_stacked_by_hand() -> None:
    loss = PerceptualLoss(["relu1_2", "relu2_2"], weights=None)
    clip, target = _pair((2, 3, 5, 32, 40))
    stacked = clip.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 40)
    stacked_target = target.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 40)
    torch.testing.assert_close(
        SlicedLoss(loss, dims=(2,))(clip, target), loss(stacked, stacked_target), rtol=1e-6, atol=0
    )


def test_per_sample_draws_k_frames_per_clip_and_undrawn_frames_get_zero_gradient() -> None:
    loss = SlicedLoss(
        PerceptualLoss(["relu1_2"], weights=None), dims=(2,), per_sample=2, generator=torch.Generator().manual_seed(3)
    )
    clip, target = _pair((3, 3, 7, 16, 16))
    clip.requires_grad_()
    loss(clip, target).backward()
    assert clip.grad is not None
    touched = clip.grad.abs().sum(dim=(1, 3, 4)) > 0  # (N, T)
    assert touched.sum(dim=1).tolist() == [2, 2, 2]


def test_the_same_seed_gives_the_same_slices_and_value() -> None:
    volume, target = _pair((2, 1, 12, 14, 16))
    inner = PerceptualLoss(["relu1_2"], weights=None, grayscale="repeat")
    values = [
        SlicedLoss(inner, ratio=0.3, generator=torch.Generator().manual_seed(seed))(volume, target).item()
        for seed in (5, 5, 6)
    ]
    assert values[0] == values[1]
    assert values[0] != values[2]
    state = torch.random.get_rng_state()
    SlicedLoss(inner, ratio=0.3, generator=torch.Generator().manual_seed(5))(volume, target)
    assert torch.equal(torch.random.get_rng_state(), state), "a given generator leaves the global RNG alone"


def test_ratio_draws_monai_count_without_replacement() -> None:
    slicing = Slicing(dims=(2,), ratio=0.4)
    index = slicing.draw(batch=3, count=10, generator=torch.Generator().manual_seed(0))
    assert index.numel() == int(0.4 * 30) == len(set(index.tolist()))
    assert index.min() >= 0 and index.max() < 30
    every = Slicing(dims=(3,)).draw(batch=2, count=4)
    assert every.tolist() == list(range(8))


def test_per_sample_values_and_sum_over_dims() -> None:
    """``reduction="none"`` gives each sample's mean over its slices, summed over dims; its mean is the scalar."""
    inner_none = PerceptualLoss(["relu1_2"], grayscale="repeat", reduction="none")  # the hub cache's trunk
    inner_mean = PerceptualLoss(["relu1_2"], grayscale="repeat")
    volume, target = _pair((2, 1, 10, 12, 14))
    per_sample = SlicedLoss(inner_none)(volume, target)
    assert per_sample.shape == (2,)
    by_dim = [SlicedLoss(inner_mean, dims=(d,))(volume, target) for d in (2, 3, 4)]
    torch.testing.assert_close(SlicedLoss(inner_mean)(volume, target), sum(by_dim), rtol=1e-6, atol=0)
    # every slice, every sample has `count` slices in each dim: the batch mean of per-sample values is the scalar
    torch.testing.assert_close(per_sample.mean(), sum(by_dim), rtol=1e-6, atol=0)


def test_chunked_inner_loss_gives_the_same_value_and_gradient() -> None:
    volume, target = _pair((1, 1, 18, 20, 24))
    grads, values = [], []
    for chunk_size in (None, 5):
        x = volume.clone().requires_grad_()
        inner = LPIPSLoss(net="squeeze", grayscale="repeat", chunk_size=chunk_size)  # the hub cache's trunk
        value = SlicedLoss(inner)(x, target)
        value.backward()
        values.append(value.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[1], values[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5 * grads[0].abs().max().item())


def test_mask_is_sliced_like_the_images() -> None:
    inner = PerceptualLoss(["relu1_2"], weights=None, grayscale="repeat")
    volume, target = _pair((2, 1, 8, 16, 16))
    mask = torch.zeros(1, 1, 8, 16, 16)
    mask[..., :8] = 1
    masked = SlicedLoss(inner, dims=(2,))(volume, target, mask=mask)
    by_hand = inner(take_slices(volume, 2, torch.arange(16)), take_slices(target, 2, torch.arange(16)),
                    mask=take_slices(mask.expand(2, -1, -1, -1, -1), 2, torch.arange(16)))  # fmt: skip
    torch.testing.assert_close(masked, by_hand)
    assert not torch.allclose(masked, SlicedLoss(inner, dims=(2,))(volume, target))


def test_a_user_function_is_wrapped_too() -> None:
    volume, target = _pair((2, 1, 6, 8, 10))
    value = SlicedLoss(lambda p, t: (p - t).abs().mean(), dims=(3,))(volume, target)
    torch.testing.assert_close(value, (volume - target).abs().mean())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dims": (1,)}, "out of range"),
        ({"dims": (5,)}, "out of range"),
        ({"dims": (2, -3)}, "repeats a dim"),
        ({"dims": ()}, "non-empty"),
        ({"ratio": 0.0}, r"ratio must be in \(0, 1\]"),
        ({"ratio": 1.5}, r"ratio must be in \(0, 1\]"),
        ({"ratio": 0.5, "per_sample": 2}, "give one"),
        ({"per_sample": 0}, "positive int"),
        ({"generator": 3}, "torch.Generator"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        SlicedLoss(PerceptualLoss(["relu1_2"], weights=None), **kwargs)


def test_bad_input_is_a_clear_error() -> None:
    loss = PerceptualLoss(["relu1_2"], weights=None)
    sliced = SlicedLoss(loss, dims=(2,), per_sample=9)
    clip, target = _pair((1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="4-D: call the wrapped loss"):
        sliced(clip[:, :, 0], target[:, :, 0])
    with pytest.raises(ValueError, match=r"SlicedLoss\(loss, dims=\(2,\)\)"):
        loss(clip, target)
    with pytest.raises(ValueError, match="per_sample=9 is more than the 4 slices"):
        sliced(clip, target)
    with pytest.raises(ValueError, match="same shape"):
        SlicedLoss(loss, dims=(2,))(clip, target[:, :, :3])
    with pytest.raises(ValueError, match="draws int"):
        SlicedLoss(loss, dims=(2,), ratio=0.1)(clip, target)
    with pytest.raises(ValueError, match="spatial map"):
        SlicedLoss(lambda p, t: (p - t).abs(), dims=(2,))(clip, target)
    from perceptual_loss import CombinedLoss

    with pytest.raises(TypeError, match="pass slices= to it"):
        SlicedLoss(CombinedLoss(l1=1.0), dims=(2,))(clip, target)


def test_criterion_scores_pixels_on_the_whole_clip_and_features_on_the_drawn_frames() -> None:
    from perceptual_loss import CombinedLoss

    clip, target = _pair((2, 3, 6, 32, 32))
    criterion = CombinedLoss(
        l1=1.0, lpips={"weight": 0.5, "net": "squeeze"}, slices={"dims": (2,), "per_sample": 3,
        "generator": torch.Generator().manual_seed(1)},
    )  # fmt: skip
    sliced = SlicedLoss(LPIPSLoss(net="squeeze"), dims=(2,), per_sample=3, generator=torch.Generator().manual_seed(1))
    x = clip.clone().requires_grad_()
    total, parts = criterion(x, target)
    total.backward()
    torch.testing.assert_close(parts["l1"], (clip - target).abs().mean())
    torch.testing.assert_close(parts["lpips"], sliced(clip, target).detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(total.detach(), parts["l1"] + 0.5 * parts["lpips"])
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_criterion_volume_sums_over_dims_and_chunks_alike() -> None:
    from perceptual_loss import CombinedLoss

    volume, target = _pair((1, 1, 18, 20, 22))
    config = {"perceptual": {"layers": ["relu1_2", "relu2_2"]}, "grayscale": "repeat", "slices": {"dims": (2, 3, 4)}}
    whole = CombinedLoss(**config)(volume, target)
    chunked = CombinedLoss(**config, chunk_size=7)(volume, target)
    sliced = SlicedLoss(PerceptualLoss(["relu1_2", "relu2_2"], grayscale="repeat"))(volume, target)
    torch.testing.assert_close(whole.total, sliced, rtol=1e-6, atol=0)
    torch.testing.assert_close(chunked.total, sliced, rtol=1e-6, atol=0)


def test_criterion_without_slices_names_the_option() -> None:
    from perceptual_loss import CombinedLoss

    clip, target = _pair((1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="slices="):
        CombinedLoss(l1=1.0)(clip, target)
    with pytest.raises(TypeError, match="Unknown slices option"):
        CombinedLoss(l1=1.0, slices={"dim": 2})
    with pytest.raises(ValueError, match="repeats a dim"):
        CombinedLoss(l1=1.0, slices={"dims": (2, 2)})


def test_temporal_lpips_equals_lpips_of_consecutive_frames() -> None:
    from perceptual_loss import TemporalLPIPS

    clip, target = _pair((2, 3, 4, 32, 32))
    lpips = LPIPSLoss(net="squeeze", reduction="none")

    def steps(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([lpips(x[:, :, t], x[:, :, t - 1]) for t in range(1, x.shape[2])], dim=1)

    expected = (steps(clip) - steps(target)).abs().mean(dim=1)
    x = clip.clone().requires_grad_()
    values = TemporalLPIPS(net="squeeze", reduction="none")(x, target)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-7)
    values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    chunked = TemporalLPIPS(net="squeeze", reduction="none", chunk_size=1)(clip, target)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-7)
    # time on another dim: (N, C, H, T, W)
    moved = TemporalLPIPS(net="squeeze", dim=3, reduction="none")(clip.movedim(2, 3), target.movedim(2, 3))
    torch.testing.assert_close(moved, expected, rtol=1e-5, atol=1e-7)


def test_temporal_lpips_is_zero_when_the_change_matches_and_errors_are_clear() -> None:
    from perceptual_loss import TemporalLPIPS

    loss = TemporalLPIPS(net="squeeze")
    clip, target = _pair((1, 3, 3, 32, 32))
    assert loss(clip, clip).item() == 0.0
    frozen = clip[:, :, :1].expand(-1, -1, 3, -1, -1)  # a video that never moves flickers not, but is far off
    assert loss(frozen, clip).item() > 0
    with pytest.raises(ValueError, match="at least 2 frames"):
        loss(clip[:, :, :1], target[:, :, :1])
    with pytest.raises(ValueError, match="5-D clips"):
        loss(clip[:, :, 0], target[:, :, 0])
    with pytest.raises(ValueError, match="dim must be the time dim"):
        TemporalLPIPS(net="squeeze", dim=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tile'"):
        TemporalLPIPS(net="squeeze", tile=256)
