"""Where the frozen networks' weights come from, checked strictly.

Backbone weights (``weights=`` everywhere in the library):

- ``"imagenet"`` (default): torchvision's ImageNet weights through torchvision's weights API and
  the torch hub cache (``$TORCH_HOME/hub/checkpoints/``), downloaded when missing and online.
  For the classic backbones (the VGGs, ``alexnet``, ``squeezenet1_1``) this is ``IMAGENET1K_V1``
  (what LPIPS was calibrated on); for every other torchvision model, the model's ``DEFAULT`` entry;
- a member name of the model's weights enum, e.g. ``"IMAGENET1K_V2"`` for ``resnet50``: that
  entry, loaded the same way;
- a ``str`` or ``pathlib.Path``: a local file holding a full torchvision state dict of the
  architecture or (VGG, AlexNet, SqueezeNet, ...) only its ``features`` part (keys with or
  without the ``features.`` prefix);
- ``None``: random initialisation, **for tests only**: random features are not perceptual.

LPIPS' linear heads come from the files the ``lpips`` package ships (``lpips/weights/v*/``).

Every file is read with ``torch.load(weights_only=True)`` (no code runs while unpickling) and its
keys and shapes must match the architecture exactly: a mismatch is an error, never random weights.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum  # imported where used: the classic path needs no torchvision

logger = logging.getLogger(__name__)

WeightsArg = str | os.PathLike | None
"""``"imagenet"`` | a weights enum member name such as ``"IMAGENET1K_V2"`` | path to a local file |
``None`` (random, for tests only)."""

CLASSIC_IMAGENET_FILES: dict[str, str] = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg11": "https://download.pytorch.org/models/vgg11-8a719046.pth",
    "vgg13": "https://download.pytorch.org/models/vgg13-19584684.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg11_bn": "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
    "vgg13_bn": "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
    "vgg19_bn": "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}
"""What ``weights="imagenet"`` (also ``"IMAGENET1K_V1"``, ``"DEFAULT"``) means for the classic
backbones: torchvision's ``IMAGENET1K_V1`` entry (the weights LPIPS was calibrated on), by the URL
torchvision's weights API downloads and caches it from. Written out so that reading the cached
file needs no ``import torchvision`` (a second of start-up); a test checks every URL against
torchvision's enum, through which a missing file is still downloaded. For every other torchvision
model ``"imagenet"`` means the model's ``DEFAULT`` entry."""
_CLASSIC_ENTRY_NAMES = ("imagenet", "IMAGENET1K_V1", "DEFAULT")

LPIPS_NETS = ("alex", "vgg", "squeeze")
LPIPS_VERSIONS = ("0.1", "0.0")


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable, or a given file does not exist."""


class InvalidWeightsError(ValueError):
    """A weights file is unreadable, or its keys or shapes do not match the architecture."""


@dataclass(frozen=True)
class WeightsEntry:
    """One entry of a torchvision model's weights enum: ``backbone``'s member ``name``, at ``url``."""

    backbone: str
    name: str
    url: str

    @property
    def path(self) -> Path:
        """The file torchvision's weights API keeps it in: ``$TORCH_HOME/hub/checkpoints/<url's file name>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self.url).path)

    def download(self) -> Mapping[str, Tensor]:
        """The state dict through torchvision's weights API: downloaded into :attr:`path`, its hash checked."""
        from torchvision import models

        enum = models.get_model_weights(self.backbone)[self.name]
        return enum.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)


def weights_entry(backbone: str, weights: str) -> WeightsEntry | None:
    """The torchvision weights entry that ``weights`` names for ``backbone``, or ``None`` for a path.

    ``"imagenet"`` is ``IMAGENET1K_V1`` for the classic backbones (:data:`CLASSIC_IMAGENET_FILES`)
    and the model's ``DEFAULT`` otherwise; a member name of the model's weights enum
    (``"IMAGENET1K_V2"``, ``"DEFAULT"``) picks that entry. Any other string is taken as a path.

    Raises:
        ValueError: ``"imagenet"`` for a model torchvision has no weights for.
    """
    if backbone in CLASSIC_IMAGENET_FILES:
        if weights in _CLASSIC_ENTRY_NAMES:
            return WeightsEntry(backbone, "IMAGENET1K_V1", CLASSIC_IMAGENET_FILES[backbone])
        if not (weights.isidentifier() and weights.isupper()):
            return None  # a path: member names are upper-case identifiers (no torchvision import to know)
    enum = weights_enum(backbone, weights)
    return None if enum is None else WeightsEntry(backbone, enum.name, enum.url)


def weights_enum(backbone: str, weights: str) -> WeightsEnum | None:
    """The member of torchvision's weights enum of ``backbone`` that ``weights`` names
    (``"imagenet"``: ``DEFAULT``), or ``None`` when it names none (a path).

    Raises:
        ValueError: ``"imagenet"`` for a model torchvision has no weights for.
    """
    from torchvision import models

    try:
        enum = models.get_model_weights(backbone)
    except (ValueError, KeyError):
        enum = None
    if weights == "imagenet":
        if enum is None:
            raise ValueError(f"torchvision has no pretrained weights for {backbone!r}; pass weights=<path> or None.")
        return enum.DEFAULT  # type: ignore[attr-defined]
    if enum is not None and weights in enum.__members__:
        return enum[weights]
    return None


def imagenet_weights_path(backbone: str, weights: str = "imagenet") -> Path:
    """The file torchvision reads ``weights`` of ``backbone`` from (it may not exist yet)."""
    entry = weights_entry(backbone, weights)
    if entry is None:
        raise ValueError(f"{weights!r} is not a weights name of {backbone}.")
    return entry.path


def load_backbone_state(backbone: str, weights: WeightsArg, expected: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """Read and check the weights of ``backbone``.

    Args:
        backbone: a torchvision model name (what :func:`torchvision.models.get_model` takes), or a
            name for the user's module (used in messages).
        weights: ``"imagenet"`` | a weights enum member name | path | ``None`` (see module doc).
        expected: the full model's state dict (meta tensors are enough): the keys and shapes the
            file must have.

    Returns:
        ``None`` for ``weights=None``; otherwise the whole state dict, keys as in ``expected``.
        A file that holds only the ``features`` part (with or without the ``features.`` prefix)
        gives only those keys.

    Raises:
        MissingWeightsError: no cached file and no download possible, or the path does not exist.
        InvalidWeightsError: unreadable file, or keys/shapes that do not match ``backbone``.
        TypeError: ``weights`` of another type.
    """
    if weights is None:
        return None
    entry = weights_entry(backbone, weights) if isinstance(weights, str) else None
    if entry is not None:
        state, source = _load_torchvision(entry), entry.path
    elif isinstance(weights, (str, os.PathLike)):
        source = Path(weights).expanduser()
        state = _load_file(source, what=f"{backbone} weights")
    else:
        raise TypeError(
            f"weights must be 'imagenet', a weights name such as 'IMAGENET1K_V1', a path to a weights file, "
            f"or None (random, tests only); got {weights!r}"
        )
    return _checked(_renamed_legacy_keys(state, expected), expected, backbone, source)


def _load_torchvision(entry: WeightsEntry) -> Mapping[str, Tensor]:
    backbone, cached = entry.backbone, entry.path
    exists = cached.is_file()
    try:
        if exists:
            # The file torchvision's weights API caches, memory-mapped: only the layers we keep
            # are ever read (VGG's classifier is 90% of the file).
            return _torch_load(cached)
        # Not cached: torchvision's weights API downloads it into the torch hub cache and
        # verifies the file's hash.
        return entry.download()
    except Exception as error:
        if exists:
            raise InvalidWeightsError(
                f"Could not read the cached ImageNet weights of {backbone} at {cached} "
                f"({type(error).__name__}; details above). The file may be truncated or corrupt: "
                f"delete it and run again to re-download, or pass weights=<path to a good copy>."
            ) from error
        raise MissingWeightsError(
            f"ImageNet weights for {backbone} are not available: expected the file {cached.name!r} in "
            f"the torch hub cache {cached.parent} (set by $TORCH_HOME), and downloading it from "
            f"{entry.url} failed ({type(error).__name__}: {error}). Either (1) download that file on a "
            f"machine with internet and copy it to {cached}, or (2) pass weights='/path/to/{cached.name}' "
            f"(a torchvision state dict of {backbone}). weights=None gives "
            f"random weights, which are for tests only."
        ) from error


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped when the file's format allows it.

    Memory-mapped, only the tensors that are used get read from disk (a full VGG or AlexNet file
    is mostly classifier weights the extractor drops). Files in torch's legacy (non-zip) format
    cannot be mapped and are read whole.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_file(path: Path, what: str) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise MissingWeightsError(f"The {what} file {str(path)!r} does not exist. Check the path.")
    try:
        state = _torch_load(path)
    except Exception as error:
        raise InvalidWeightsError(
            f"Could not read the {what} file {str(path)!r} with torch.load(weights_only=True) "
            f"({type(error).__name__}; details above). Expected a state dict (names to tensors) saved "
            f"with torch.save; the file may be truncated, corrupt, not a PyTorch file, or hold objects "
            f"other than tensors, which are refused because unpickling them could run code."
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InvalidWeightsError(
            f"The {what} file {str(path)!r} does not hold a state dict (a mapping of names to tensors); "
            f"got {type(state).__name__}."
        )
    return state


_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
"""DenseNet files keep pre-0.4 key names (``norm.1``); torchvision renames them when loading."""


def _renamed_legacy_keys(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if all(key in expected for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match and key not in expected else key] = value
    return renamed


def _checked(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], backbone: str, source: Path
) -> dict[str, Tensor]:
    """Keys and shapes exactly those of the full model, or of its ``features`` part.

    A features-only file may leave out the ``features.`` prefix; the result always has it.
    """
    features = _features_of(expected)
    if features and not any(k.startswith("features.") for k in state):
        given = {f"features.{k}": v for k, v in state.items()}  # features only, keys relative to it
        wanted = features
    else:
        given = dict(state)
        wanted = dict(expected) if not features or any(not k.startswith("features.") for k in state) else features
    missing, unexpected = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
    if missing or unexpected:
        part = f"a full {backbone} state dict" + (" or its 'features' part" if features else "")
        from torchvision import models

        owner = f"torchvision's {backbone}" if backbone in models.list_models(module=models) else backbone
        raise InvalidWeightsError(
            f"The weights in {source} do not match {owner}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}. Expected {part} (keys like {next(iter(wanted), '')!r}). "
            f"Nothing was loaded."
        )
    wrong = [
        f"{k}: {tuple(v.shape)} (expected {tuple(wanted[k].shape)})"
        for k, v in given.items()
        if v.shape != wanted[k].shape
    ]
    if wrong:
        raise InvalidWeightsError(
            f"The weights in {source} have the keys of {backbone} but wrong shapes: {_few(wrong)}. "
            f"They belong to another architecture. Nothing was loaded."
        )
    return given


def _features_of(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith("features.")}


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit]) or "none"
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def lpips_heads_path(net: str, version: str) -> Path:
    """The linear-head file that the ``lpips`` package ships for ``net`` and ``version``."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            "LPIPS' linear heads come from the 'lpips' package, which is not installed: "
            "pip install lpips (or pass head_weights=<path to lin weights .pth>)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / f"v{version}" / f"{net}.pth"


def load_lpips_heads(net: str, version: str, channels: tuple[int, ...], path: WeightsArg = None) -> list[Tensor]:
    """Read LPIPS' linear heads: one ``(1, C_k, 1, 1)`` non-bias 1x1 convolution weight per tap.

    Args:
        net: ``"alex"`` | ``"vgg"`` | ``"squeeze"``.
        version: ``"0.1"`` | ``"0.0"``.
        channels: the channel count of each tap, in order.
        path: a file with the same keys as lpips' (``lin{k}.model.1.weight``); ``None`` for the
            file the ``lpips`` wheel ships.

    Raises:
        MissingWeightsError, InvalidWeightsError: as for backbones.
    """
    source = lpips_heads_path(net, version) if path is None else Path(path).expanduser()
    state = _load_file(source, what=f"LPIPS {net} v{version} linear-head")
    expected = {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(channels)}
    if set(state) != set(expected):
        raise InvalidWeightsError(
            f"The LPIPS head file {source} does not match net={net!r}: missing keys "
            f"{_few(sorted(set(expected) - set(state)))}, unexpected keys {_few(sorted(set(state) - set(expected)))}."
        )
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {s})" for k, s in expected.items() if tuple(state[k].shape) != s]
    if wrong:
        raise InvalidWeightsError(f"The LPIPS head file {source} has wrong shapes for net={net!r}: {_few(wrong)}.")
    return [state[k].float() for k in expected]


DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)
"""Channels of DISTS' six stages: the image, then VGG16 relu1_2 .. relu5_3."""


def dists_weights_path() -> Path:
    """The alpha/beta file that the ``DISTS_pytorch`` package (``pip install dists-pytorch``) ships."""
    spec = importlib.util.find_spec("DISTS_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            "DISTS' trained alpha/beta weights come from the 'dists-pytorch' package, which is not installed: "
            "pip install 'perceptual-loss[dists]' (or pip install dists-pytorch), or pass "
            "dists_weights=<path to its weights.pt, a dict of 'alpha' and 'beta' tensors of shape (1, 1475, 1, 1)>."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights.pt"


def load_dists_weights(path: WeightsArg = None) -> tuple[Tensor, Tensor]:
    """DISTS' ``alpha`` and ``beta``, each ``(1, 1475, 1, 1)``, read strictly.

    Args:
        path: a file like the one ``DISTS_pytorch`` ships (``{"alpha": ..., "beta": ...}``);
            ``None`` for that file, found with importlib (not ``sys.prefix``, which breaks
            under conda and some virtual environments).

    Raises:
        MissingWeightsError, InvalidWeightsError: as for backbones; the message names the file
        and the expected keys and shapes.
    """
    source = dists_weights_path() if path is None else Path(path).expanduser()
    state = _load_file(source, what="DISTS alpha/beta")
    shape = (1, sum(DISTS_CHANNELS), 1, 1)
    expected = f"keys 'alpha' and 'beta', each of shape {shape}"
    if set(state) != {"alpha", "beta"}:
        raise InvalidWeightsError(f"The DISTS weights file {source} has keys {sorted(state)}; expected {expected}.")
    wrong = {k: tuple(v.shape) for k, v in state.items() if tuple(v.shape) != shape}
    if wrong:
        raise InvalidWeightsError(f"The DISTS weights file {source} has shapes {wrong}; expected {expected}.")
    return state["alpha"].float(), state["beta"].float()
