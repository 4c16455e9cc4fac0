"""Reference computations straight from torchvision, independent of the library's code, and
what autograd saves for backward."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

_CONSTRUCTORS = {
    "vgg16": models.vgg16,
    "vgg19": models.vgg19,
    "alexnet": models.alexnet,
    "squeezenet1_1": models.squeezenet1_1,
}


def torchvision_features(backbone: str, weights_file: Path) -> nn.Sequential:
    """torchvision's ``model.features`` with the weights in ``weights_file``, all ReLUs out of place."""
    model = _CONSTRUCTORS[backbone](weights=None)
    model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    features = copy.deepcopy(model.features).eval()
    for module in features.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return features


def run_to(features: nn.Sequential, images01: Tensor, indices: dict[str, int]) -> dict[str, Tensor]:
    """ImageNet-normalise ``[0, 1]`` images and collect the outputs at ``indices``."""
    x = (images01 - IMAGENET_MEAN) / IMAGENET_STD
    out: dict[str, Tensor] = {}
    for index, layer in enumerate(features):
        x = layer(x)
        for name, wanted in indices.items():
            if wanted == index:
                out[name] = x
        if len(out) == len(indices):
            break
    return out


def saved_tensors(run: Callable[[], object]) -> dict[int, Tensor]:
    """Every distinct storage autograd saves for backward while ``run()`` builds its graph."""
    saved: dict[int, Tensor] = {}

    def pack(tensor: Tensor) -> Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return saved


def storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the storages behind ``tensors``."""
    return sum(t.untyped_storage().nbytes() for t in tensors)


def module_snapshot(module: nn.Module) -> dict[str, object]:
    """Everything a loss must leave as it was in a user's module: values, storage, flags, modes, types."""
    return {
        "state": {k: v.clone() for k, v in module.state_dict().items()},
        "ptrs": [t.data_ptr() for t in module.state_dict().values()],
        "grad": [p.requires_grad for p in module.parameters()],
        "modes": [m.training for m in module.modules()],
        "dtypes": [t.dtype for t in module.state_dict().values()],
        "inplace": [getattr(m, "inplace", None) for m in module.modules()],
        "types": [type(m) for m in module.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()],
    }


def assert_unchanged(before: dict[str, object], after: dict[str, object]) -> None:
    for key in before:
        if key == "state":
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])  # type: ignore[index]
        else:
            assert before[key] == after[key], key


def value_and_grads(loss: nn.Module, pred: Tensor, target: Tensor, **kwargs: object) -> tuple[Tensor, ...]:
    """``(value, pred's gradient, target's gradient)`` of a loss on copies of the inputs (target
    with grad only if it requires it), the value weighted per element so every sample counts."""
    pred = pred.detach().requires_grad_()
    target = target.detach().requires_grad_(target.requires_grad)
    value = loss(pred, target, **kwargs)
    weights = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).reshape(value.shape)
    (value * weights).sum().backward()
    return value.detach(), pred.grad, target.grad  # type: ignore[return-value]
