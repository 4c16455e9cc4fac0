"""``FrozenModule``: the base of every fixed network held inside a loss.

A loss carries networks it never trains (a VGG trunk, LPIPS' linear heads). Users hit three bugs
with them in other libraries: the networks receive gradients, ``model.train()`` switches their
dropout on, and their 50+ MB of weights land in every checkpoint of the model that holds the loss.
``FrozenModule`` rules all three out in one place:

- every parameter has ``requires_grad=False`` (call :meth:`FrozenModule.freeze` after building);
- :meth:`train` always leaves it in eval mode, whatever a parent module asks for;
- its tensors never appear in ``state_dict()`` of any module holding it, and
  ``load_state_dict(strict=True)`` of such a module neither expects them nor loads them: the
  weights always come from the ``weights=`` argument, never from a training checkpoint.

Its tensors are kept as (frozen) parameters rather than buffers on purpose: DistributedDataParallel
broadcasts buffers on every forward call, but parameters only once, at wrapping time.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)


class FrozenModule(nn.Module):
    """An ``nn.Module`` that is frozen, eval-locked and absent from checkpoints (see module doc)."""

    _load_prefixes: set[str]

    def __init__(self) -> None:
        super().__init__()
        self._load_prefixes: set[str] = set()
        self.register_state_dict_post_hook(_drop_own_keys)
        self.register_load_state_dict_pre_hook(_skip_own_keys)
        self.register_load_state_dict_post_hook(_forgive_own_missing_keys)
        super().train(False)

    def freeze(self) -> FrozenModule:
        """Turn off gradients of every parameter and switch to eval mode; returns ``self``."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> FrozenModule:  # noqa: ARG002 - the point is to ignore it
        """Stay in eval mode: a frozen network never switches to training behaviour."""
        return super().train(False)


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
