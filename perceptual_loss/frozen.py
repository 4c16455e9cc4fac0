"""``FrozenModule``: the base of every fixed network held inside a loss.

A loss carries networks it never trains (a VGG trunk, LPIPS' linear heads). Users hit three bugs
with them in other libraries: the networks receive gradients, ``model.train()`` switches their
dropout on, and their 50+ MB of weights land in every checkpoint of the model that holds the loss.
``FrozenModule`` rules all three out in one place:

- every parameter has ``requires_grad=False`` (call :meth:`FrozenModule.freeze` after building);
- it computes the same in training and in eval mode. The mode flag of a module whose forward
  never reads it (convolutions, activations, pools, frozen BatchNorm, LayerNorm, plain
  Sequentials, traced graphs...) follows the parent, so frameworks that warn about modules left
  in eval mode (Lightning) stay quiet; ``model.train()`` changes nothing there. A module whose
  forward may read the flag (dropout, stochastic depth, ``nn.MultiheadAttention``, a whole
  submodule of the user's own backbone) stays in eval mode whatever the parent asks;
- its tensors never appear in ``state_dict()`` of any module holding it, and
  ``load_state_dict(strict=True)`` of such a module neither expects them nor loads them: the
  weights always come from the ``weights=`` argument, never from a training checkpoint.

Its tensors are kept as (frozen) parameters rather than buffers on purpose: DistributedDataParallel
broadcasts buffers on every forward call, but parameters only once, at wrapping time.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import fx, nn

logger = logging.getLogger(__name__)

MODE_FREE: frozenset[type[nn.Module]] = frozenset({
    nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict,
    nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softmax,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample,
    nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.ZeroPad2d, nn.ConstantPad2d,
})  # fmt: skip
"""Module types (exact types: a subclass may read the flag) whose forward never reads ``training``.
The library's own frozen layers (``FrozenBatchNorm``, pools, Fire) register themselves with
:func:`mode_free`."""
_MODE_FREE_CLASSES: set[type[nn.Module]] = set()


def mode_free(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: this module's forward computes the same in training and eval mode."""
    _MODE_FREE_CLASSES.add(cls)
    return cls


def is_mode_free(module: nn.Module) -> bool:
    """Whether ``module``'s own forward ignores the mode flag (its children are judged on their own).

    Frozen modules of this library never read it; traced graphs (``fx.GraphModule``) baked eval
    mode in when they were traced.
    """
    kind = type(module)
    if kind in MODE_FREE or kind in _MODE_FREE_CLASSES or isinstance(module, (FrozenModule, fx.GraphModule)):
        return True
    # torchvision's blocks (Conv2dNormActivation, MLP, ViT's MLPBlock...) are Sequentials that only
    # run their children in order; each child is judged on its own (a Dropout in them stays in eval).
    return isinstance(module, nn.Sequential) and kind.forward is nn.Sequential.forward


class FrozenModule(nn.Module):
    """An ``nn.Module`` that is frozen, the same in train and eval mode, and absent from checkpoints (see module doc)."""

    _load_prefixes: set[str]

    def __init__(self) -> None:
        super().__init__()
        self._load_prefixes: set[str] = set()
        self.register_state_dict_post_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_skip_own_keys)
        self.register_load_state_dict_post_hook(_forgive_own_missing_keys)

    def freeze(self) -> FrozenModule:
        """Turn off gradients of every parameter and pin what may read the mode flag to eval; returns ``self``.

        The other flags are those of a new module (training), as a parent's would be.
        """
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> FrozenModule:
        """Let the flag follow ``mode`` where the forward ignores it; everything else stays in eval mode.

        Either way nothing computes differently (see the module doc).
        """
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        idle = _never_run(self)
        for module in self.modules():
            module.training = mode and (id(module) in idle or is_mode_free(module))
        return self


def _never_run(root: nn.Module) -> set[int]:
    """Modules kept in a traced graph's hierarchy whose forward the graph never calls.

    A ``GraphModule`` runs its generated code, calling only its ``call_module`` targets (and what
    they call); the containers around them (torchvision's blocks, a dropout the trace replaced)
    are never run, so their flags change nothing.
    """
    idle: set[int] = set()
    for graph in (m for m in root.modules() if isinstance(m, fx.GraphModule)):
        called = (graph.get_submodule(str(n.target)) for n in graph.graph.nodes if n.op == "call_module")
        run = {id(module) for target in called for module in target.modules()}
        idle.update(id(module) for module in graph.modules() if module is not graph and id(module) not in run)
    return idle


def _drop_own_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _skip_own_keys(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    own = [key for key in state_dict if key.startswith(prefix)]
    if own:
        logger.debug("Ignoring %d frozen-network entries under %r in the loaded state dict", len(own), prefix)
    for key in own:
        del state_dict[key]
    assert isinstance(module, FrozenModule)
    module._load_prefixes.add(prefix)


def _forgive_own_missing_keys(module: nn.Module, incompatible_keys: Any) -> None:
    assert isinstance(module, FrozenModule)
    prefixes = tuple(module._load_prefixes)
    module._load_prefixes.clear()
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not key.startswith(prefixes)]
