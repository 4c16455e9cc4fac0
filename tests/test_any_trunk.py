"""Any network as a trunk (issue 26): timm, open_clip and transformers ViTs, traceable or not.

Random weights throughout (the packages build their models from configs, offline): these tests
prove mechanics and parity with each module's own intermediate outputs, read by forward hooks on
the user's original module, never perceptual quality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceptual_loss import CombinedLoss, FeatureExtractor, PerceptualLoss, StyleLoss, available_taps
from perceptual_loss.backbones import STATISTICS, MultipleOf
from perceptual_loss.backbones.hooks import HookedTrunk

from .helpers import assert_unchanged, module_snapshot

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")


class _Stop(Exception):
    pass


def own_outputs(module: nn.Module, names: Sequence[str], x: Tensor) -> dict[str, Tensor]:
    """What forward hooks on the user's own module capture (the first element of a tuple), stopping
    once every name has run: the reference, independent of the library."""
    captured: dict[str, Tensor] = {}

    def hook(m: nn.Module, args: object, output: object, name: str) -> None:
        captured[name] = (output[0] if isinstance(output, tuple) else output).clone()  # type: ignore[index,union-attr]
        if len(captured) == len(names):
            raise _Stop

    handles = [module.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
    try:
        with torch.no_grad():
            module(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def patch_map(tokens: Tensor, prefix: int, rows: int, cols: int) -> Tensor:
    """``(N, L, D)`` -> ``(N, D, rows, cols)``: prefix tokens dropped, patches row by row."""
    return tokens[:, prefix:].reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)


def dinov2(**options: object) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, **options).eval()


def open_clip_visual() -> nn.Module:
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None).visual.eval()


def hf_clip() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, image_size=64, patch_size=16
    )
    return transformers.CLIPVisionModel(config).eval()


def hf_siglip() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.SiglipVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64, patch_size=16
    )
    return transformers.SiglipVisionModel(config).eval()


def timm_clip() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_clip_224", pretrained=False).eval()


# name: (module factory, taps, image size, resize, prefix tokens, patch, hooked (not traced))
CASES: dict[str, tuple[Callable[[], nn.Module], list[str], tuple[int, int], object, int, int, bool]] = {
    "dinov2-dynamic": (lambda: dinov2(dynamic_img_size=True), ["blocks.1", "blocks.3"], (56, 70), None, 1, 14, True),
    "dinov2-518": (dinov2, ["blocks.1"], (100, 120), 518, 1, 14, False),  # fixed size: fx traces it
    "dinov2-registers": (
        lambda: timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, dynamic_img_size=True).eval(),
        ["blocks.2"], (42, 56), None, 5, 14, True,
    ),
    "timm-clip": (timm_clip, ["blocks.2"], (224, 224), None, 1, 16, False),  # fixed size: fx traces it
    "open_clip": (open_clip_visual, ["transformer.resblocks.2"], (224, 224), None, 1, 32, False),
    "transformers-clip": (hf_clip, ["encoder.layers.1", "encoder.layers.2"], (64, 64), None, 1, 16, True),
    "transformers-siglip": (hf_siglip, ["encoder.layers.1"], (64, 64), None, 0, 16, True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_taps_equal_the_modules_own_outputs_and_the_module_is_unchanged(case: str) -> None:
    factory, taps, (height, width), resize, prefix, patch, hooked = CASES[case]
    module = factory()
    before = module_snapshot(module)
    extractor = FeatureExtractor(module, taps, resize=resize)  # type: ignore[arg-type]
    assert isinstance(extractor.layers, HookedTrunk) == hooked
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    ours = extractor(x)
    normalized = extractor.normalize(x)
    side = (normalized.shape[-2] // patch, normalized.shape[-1] // patch)
    expected = own_outputs(module, taps, normalized)
    for tap in taps:
        assert extractor.token_layouts[tap].prefix == prefix and extractor.token_layouts[tap].patch == patch
        torch.testing.assert_close(ours[tap], patch_map(expected[tap], prefix, *side), rtol=1e-5, atol=1e-5)

    loss = PerceptualLoss(taps, backbone=module, resize=resize)  # type: ignore[arg-type]
    holder = nn.Sequential(nn.Conv2d(3, 3, 1), loss).train()
    pred = torch.rand(2, 3, height, width, requires_grad=True)
    loss(pred, x).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and pred.grad.isfinite().all()
    assert list(holder.state_dict()) == ["0.weight", "0.bias"]
    assert not any(p.requires_grad for p in loss.parameters())
    assert all(p.grad is None for p in module.parameters())
    assert_unchanged(before, module_snapshot(module))


def test_the_forward_stops_after_the_deepest_tap_and_later_blocks_are_dropped() -> None:
    module = dinov2(dynamic_img_size=True)
    extractor = FeatureExtractor(module, ["blocks.2"])
    trunk = extractor.layers
    assert isinstance(trunk, HookedTrunk)
    ran: list[str] = []
    blocks = trunk.model.blocks  # type: ignore[union-attr]
    for index in range(3):
        blocks[index].register_forward_pre_hook(lambda m, a, index=index: ran.append(index))
    extractor(torch.rand(1, 3, 28, 28))
    assert ran == [0, 1, 2]
    kept = sum(p.numel() for p in extractor.parameters())
    assert kept < 0.35 * sum(p.numel() for p in module.parameters()), "blocks 3-11, the norm and the head dropped"
    assert type(blocks[3]).__name__ == type(blocks[11]).__name__ == "_Pruned"


def test_class_token_and_raw_tokens_by_suffix() -> None:
    module = hf_clip()
    extractor = FeatureExtractor(module, ["encoder.layers.1", "encoder.layers.1:cls", "encoder.layers.1:tokens"])
    x = torch.rand(2, 3, 64, 64)
    ours = extractor(x)
    tokens = own_outputs(module, ["encoder.layers.1"], extractor.normalize(x))["encoder.layers.1"]
    torch.testing.assert_close(ours["encoder.layers.1:tokens"], tokens, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["encoder.layers.1:cls"], tokens[:, 0], rtol=0, atol=1e-6)
    assert extractor.tap_dims == {"encoder.layers.1": 4, "encoder.layers.1:cls": 2, "encoder.layers.1:tokens": 3}
    with pytest.raises(ValueError, match=r"':cls' \(the class token\) or ':tokens'"):
        FeatureExtractor(module, ["encoder.layers.1:patches"])
    with pytest.raises(ValueError, match=r"':cls' reads transformer tokens .* gives 4-D output"):
        FeatureExtractor(module, ["embeddings.patch_embedding:cls"])
    with pytest.raises(ValueError, match="read transformer tokens; vgg16 has none"):
        FeatureExtractor("vgg16", ["relu2_2:cls"], weights=None)


def test_style_and_masks_work_on_patch_maps() -> None:
    module = dinov2(dynamic_img_size=True)
    x, y = torch.rand(2, 3, 56, 56), torch.rand(2, 3, 56, 56)
    assert StyleLoss(["blocks.1"], backbone=module)(x, y) > 0
    mask = torch.ones(2, 1, 56, 56)
    loss = PerceptualLoss(["blocks.1"], backbone=module)
    assert torch.equal(loss(x, y, mask=mask), loss(x, y))


def test_multiple_of_resizes_to_whole_patches() -> None:
    module = dinov2(dynamic_img_size=True)
    extractor = FeatureExtractor(module, ["blocks.1"], resize=MultipleOf(14))
    x = torch.rand(1, 3, 100, 150)
    resized = F.interpolate(x, size=(98, 154), mode="bilinear", align_corners=False, antialias=True)
    plain = FeatureExtractor(module, ["blocks.1"])
    assert extractor(x)["blocks.1"].shape[-2:] == (7, 11)
    assert torch.equal(extractor(x)["blocks.1"], plain(resized)["blocks.1"])
    assert extractor.min_size == 1 and plain.min_size == 14
    with pytest.raises(ValueError, match=r"MultipleOf needs a positive int size"):
        FeatureExtractor(module, ["blocks.1"], resize=MultipleOf(0))


def test_a_fixed_size_module_probes_at_resize_only_and_names_its_size() -> None:
    module = dinov2()  # timm's default: 518 x 518 only
    assert FeatureExtractor(module, ["blocks.0"]).fixed_size == 518
    with pytest.raises(ValueError, match=r"takes 518x518 images only; set resize=518"):
        FeatureExtractor(module, ["blocks.0"], resize=224)
    loss = PerceptualLoss(["blocks.0"], backbone=module)
    with pytest.raises(ValueError, match=r"takes 518x518 images only. Pass resize=518"):
        loss(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    clip = FeatureExtractor(hf_clip(), ["encoder.layers.0"])
    assert clip.fixed_size == 64


def test_an_input_size_the_module_refuses_names_the_sizes_it_takes() -> None:
    extractor = FeatureExtractor(dinov2(dynamic_img_size=True), ["blocks.0"])
    with pytest.raises(
        ValueError, match=r"refused an input of 100x100 .* whole patches of 14 pixels .*resize=MultipleOf\(14\)"
    ):
        extractor(torch.rand(1, 3, 100, 100))


def test_normalisation_by_name_and_the_modules_own() -> None:
    assert FeatureExtractor(open_clip_visual(), ["ln_pre"]).mean == STATISTICS["clip"][0]
    assert FeatureExtractor(hf_clip(), ["encoder.layers.0"]).std == STATISTICS["clip"][1]
    assert FeatureExtractor(hf_siglip(), ["encoder.layers.0"]).mean == (0.5, 0.5, 0.5)
    module = dinov2(dynamic_img_size=True)
    assert FeatureExtractor(module, ["blocks.0"]).mean == tuple(module.pretrained_cfg["mean"])
    clip = PerceptualLoss(["blocks.0"], backbone=module, normalize="clip")
    assert (clip.extractor.mean, clip.extractor.std) == STATISTICS["clip"]
    assert PerceptualLoss(["relu1_2"], weights=None, normalize="siglip").extractor.std == (0.5, 0.5, 0.5)
    with pytest.raises(
        ValueError, match=r"Unknown normalize='openai'; choose True, False or one of \('imagenet', 'clip', 'siglip'\)"
    ):
        PerceptualLoss(["blocks.0"], backbone=module, normalize="openai")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names the statistics, and mean/std give them"):
        PerceptualLoss(["blocks.0"], backbone=module, normalize="clip", mean=(0.5,) * 3)


def test_frozen_and_the_same_in_train_mode() -> None:
    torch.manual_seed(0)
    module = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True, proj_drop_rate=0.5, drop_path_rate=0.5
    ).train()  # dropout and stochastic depth on in the user's module
    loss = PerceptualLoss(["blocks.2"], backbone=module)
    x, y = torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28)
    holder = nn.Sequential(loss)
    values = [holder.train()[0](x, y), holder.eval()[0](x, y), holder.train()[0](x, y)]
    assert values[0] == values[1] == values[2]
    assert module.training, "the user's module keeps its mode"


def test_a_weights_file_loads_strictly_into_a_hooked_copy(tmp_path) -> None:
    module, other = (
        dinov2(dynamic_img_size=True),
        timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True).eval(),
    )
    torch.save(other.state_dict(), tmp_path / "other.pth")
    extractor = FeatureExtractor(module, ["blocks.1"], weights=tmp_path / "other.pth")
    x = torch.rand(1, 3, 28, 28)
    expected = own_outputs(other, ["blocks.1"], extractor.normalize(x))["blocks.1"]
    torch.testing.assert_close(extractor(x)["blocks.1"], patch_map(expected, 1, 2, 2), rtol=1e-5, atol=1e-5)
    state = other.state_dict()
    state.pop("blocks.11.mlp.fc2.bias")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="blocks.11.mlp.fc2.bias"):
        FeatureExtractor(module, ["blocks.1"], weights=tmp_path / "partial.pth")


def test_a_dreamsim_style_ensemble_runs_each_trunk_once() -> None:
    dino, clip = dinov2(dynamic_img_size=True), hf_clip()
    criterion = CombinedLoss(
        l1=1.0,
        perceptual={
            "dino": {"backbone": dino, "layers": ["blocks.1", "blocks.3"], "resize": 56, "weight": 0.5},
            "clip": {"backbone": clip, "layers": ["encoder.layers.1:cls"], "resize": 64, "distance": "l2"},
        },
    )
    assert len(criterion.extractors) == 2
    pred = torch.rand(2, 3, 80, 80, requires_grad=True)
    total, parts = criterion(pred, torch.rand(2, 3, 80, 80))
    total.backward()
    assert sorted(parts) == ["l1", "perceptual/clip", "perceptual/dino"]
    assert pred.grad is not None and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------- modules torch.fx cannot trace


class Untraceable(nn.Module):
    """Python control flow on a shape (fx cannot trace it), and submodules of every awkward kind."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.pair = Pair()
        self.named = Named()
        self.shared = nn.Conv2d(8, 8, 1)
        self.aux = nn.Conv2d(8, 2, 1)  # used in training code only, never in forward

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1))
        x = self.stem(x)
        y = self.block(x)
        y.relu_()  # overwrites block's output after it ran: the tap must stay pre-activation
        y = self.pair(y)[0] + self.named(y)["features"].mean()
        return self.shared(self.shared(y)).mean(dim=(2, 3))


class Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2, x


class Named(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"features": x}


def test_an_untraceable_users_module_is_tapped_through_hooks() -> None:
    torch.manual_seed(0)
    module = Untraceable()
    extractor = FeatureExtractor(module, ["stem", "block", "pair", "logits"], mean=(0.5,) * 3, std=(0.5,) * 3)
    assert isinstance(extractor.layers, HookedTrunk)
    x = torch.rand(2, 3, 9, 9)
    ours = extractor(x)
    normalized = extractor.normalize(x)
    expected = own_outputs(module, ["stem", "block", "pair"], normalized)
    with torch.no_grad():
        logits = module(normalized)
    for tap in ("stem", "block", "pair"):
        torch.testing.assert_close(ours[tap], expected[tap], rtol=0, atol=0)
    torch.testing.assert_close(ours["logits"], logits, rtol=0, atol=0)
    assert (ours["block"] < 0).any(), "pre-activation, although relu_ runs on it later"
    assert "aux" in available_taps(module) and available_taps(module)[-1] == "logits"


def test_bad_taps_of_an_untraceable_module_are_clear_errors() -> None:
    module = Untraceable()
    with pytest.raises(
        ValueError, match=r"torch.fx cannot trace Untraceable.*'blok' is not one of its .* Nearest module names: block"
    ):
        FeatureExtractor(module, ["blok"])
    with pytest.raises(ValueError, match=r"The tap\(s\) \['aux'\] of Untraceable never ran in its forward pass"):
        FeatureExtractor(module, ["aux", "stem"])
    with pytest.raises(ValueError, match=r"'named' returns dict, which is neither a tensor"):
        FeatureExtractor(module, ["named"])
    with pytest.raises(ValueError, match=r"'shared' of Untraceable runs more than once"):
        FeatureExtractor(module, ["shared"])
