"""Weights come from torchvision's hub cache or a file, strictly checked, with actionable errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import models

from perceptual_loss import FeatureExtractor, InvalidWeightsError, LPIPSLoss, MissingWeightsError
from perceptual_loss.weights import imagenet_weights_path, lpips_heads_path

SMALL = "squeezenet1_1"


def _features_of(extractor: FeatureExtractor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in extractor.layers.named_parameters()}


def test_imagenet_default_loads_the_cached_file(checkpoints: Path) -> None:
    assert imagenet_weights_path(SMALL) == checkpoints / "squeezenet1_1-b8a52dc0.pth"
    state = torch.load(checkpoints / "squeezenet1_1-b8a52dc0.pth", weights_only=True)
    extractor = FeatureExtractor(SMALL, ["fire9"])
    for name, value in extractor.layers.state_dict().items():
        torch.testing.assert_close(value, state[f"features.{name}"], rtol=0, atol=0)


def test_expected_torchvision_file_names() -> None:
    names = {b: imagenet_weights_path(b).name for b in ("vgg16", "vgg19", "alexnet", "squeezenet1_1")}
    assert names == {
        "vgg16": "vgg16-397923af.pth",
        "vgg19": "vgg19-dcbb9e9d.pth",
        "alexnet": "alexnet-owt-7be5be79.pth",
        "squeezenet1_1": "squeezenet1_1-b8a52dc0.pth",
    }


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty hub cache and a download that fails like it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_missing_weights_offline_names_file_folder_and_fixes(monkeypatch, tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError) as info:
        FeatureExtractor("vgg19", ["relu1_1"])
    message = str(info.value)
    cache = tmp_path / "empty_home" / "hub" / "checkpoints"
    for needle in ("vgg19", "vgg19-dcbb9e9d.pth", str(cache), "TORCH_HOME", "weights='", "copy it to"):
        assert needle in message, needle


def test_missing_weights_error_reaches_the_losses(monkeypatch, tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError, match="alexnet"):
        LPIPSLoss(net="alex")


def test_corrupt_cached_file_is_named(monkeypatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    bad = home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(InvalidWeightsError, match="squeezenet1_1-b8a52dc0.pth.*delete it"):
        FeatureExtractor(SMALL, ["fire9"])


@pytest.mark.parametrize("form", ["full", "features_prefixed", "features_only", "legacy_format"])
def test_local_file_forms(form: str, tmp_path: Path) -> None:
    """Full or features-only state dicts; zip files are memory-mapped, legacy-format ones read whole."""
    torch.manual_seed(3)
    full = models.squeezenet1_1(weights=None).state_dict()
    if form in ("full", "legacy_format"):
        state = full
    elif form == "features_prefixed":
        state = {k: v for k, v in full.items() if k.startswith("features.")}
    else:
        state = {k[len("features.") :]: v for k, v in full.items() if k.startswith("features.")}
    path = tmp_path / "weights.pth"
    torch.save(state, path, _use_new_zipfile_serialization=form != "legacy_format")
    extractor = FeatureExtractor(SMALL, ["fire5"], weights=path)
    assert len(extractor.layers) == 8
    for name, value in extractor.layers.state_dict().items():
        assert torch.equal(value, full[f"features.{name}"])
    assert torch.equal(
        FeatureExtractor(SMALL, ["fire5"], weights=str(path)).layers[0].weight, full["features.0.weight"]
    )


def test_wrong_architecture_file_is_an_error_not_random(tmp_path: Path) -> None:
    path = tmp_path / "alexnet.pth"
    torch.save(models.alexnet(weights=None).state_dict(), path)
    with pytest.raises(
        InvalidWeightsError, match=r"alexnet.pth.*do not match torchvision's squeezenet1_1.*Nothing was loaded"
    ):
        FeatureExtractor(SMALL, ["relu1"], weights=path)


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    state = models.squeezenet1_1(weights=None).state_dict()
    del state["features.12.expand3x3.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InvalidWeightsError, match=r"missing keys features.12.expand3x3.bias"):
        FeatureExtractor(SMALL, ["relu1"], weights=path)


def test_wrong_shape_is_an_error(tmp_path: Path) -> None:
    state = models.squeezenet1_1(weights=None).state_dict()
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(InvalidWeightsError, match=r"wrong shapes: features.0.weight: \(32, 3, 3, 3\)"):
        FeatureExtractor(SMALL, ["relu1"], weights=path)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="nope.pth.*does not exist"):
        FeatureExtractor(SMALL, ["relu1"], weights=tmp_path / "nope.pth")


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(InvalidWeightsError, match="does not hold a state dict"):
        FeatureExtractor(SMALL, ["relu1"], weights=path)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a file that would run code on unpickling is rejected, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(InvalidWeightsError, match="weights_only=True"):
        FeatureExtractor(SMALL, ["relu1"], weights=path)
    assert not (tmp_path / "pwned").exists()


class _Payload:
    def __reduce__(self):
        import os

        return (os.mkdir, ("pwned",))


def test_weights_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="weights must be 'imagenet', a weights name such as 'IMAGENET1K_V1', a path"):
        FeatureExtractor(SMALL, ["relu1"], weights=123)  # type: ignore[arg-type]


def test_lpips_heads_are_the_shipped_files() -> None:
    path = lpips_heads_path("alex", "0.1")
    assert path.is_file() and path.parent.name == "v0.1"
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    loss = LPIPSLoss(net="alex", weights=None)
    for k, weight in enumerate(loss.comparison.heads.weights):
        assert torch.equal(weight, shipped[f"lin{k}.model.1.weight"])


def test_lpips_head_file_for_the_wrong_net(tmp_path: Path) -> None:
    with pytest.raises(InvalidWeightsError, match="does not match net='alex'"):
        LPIPSLoss(net="alex", weights=None, head_weights=lpips_heads_path("squeeze", "0.1"))
    vgg = torch.load(lpips_heads_path("vgg", "0.1"), map_location="cpu", weights_only=True)
    path = tmp_path / "vgg_as_alex.pth"
    torch.save(vgg, path)
    with pytest.raises(InvalidWeightsError, match="wrong shapes"):
        LPIPSLoss(net="alex", weights=None, head_weights=path)


def test_features_only_file_with_a_missing_layer(tmp_path: Path) -> None:
    state = {
        k[len("features.") :]: v
        for k, v in models.squeezenet1_1(weights=None).state_dict().items()
        if k.startswith("features.")
    }
    del state["3.squeeze.weight"]
    path = tmp_path / "features.pth"
    torch.save(state, path)
    with pytest.raises(InvalidWeightsError, match=r"missing keys features.3.squeeze.weight, unexpected keys none"):
        FeatureExtractor(SMALL, ["relu1"], weights=path)
