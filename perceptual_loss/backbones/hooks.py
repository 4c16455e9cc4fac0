"""Any ``nn.Module`` tapped by module name through forward hooks, stopping after the deepest tap.

torch.fx cannot trace most transformer trunks (timm's and open_clip's ViTs with dynamic sizes,
transformers models: Python control flow on shapes, ``**kwargs`` and output classes). They can
still be tapped by the names of ``model.named_modules()`` (``blocks.5``,
``transformer.resblocks.3``, ``encoder.layers.11``), as timm's ``FeatureHooks`` does:
the module's own forward runs on a private copy, a forward hook on each tapped submodule keeps
its output, and the hook of the last one still missing stops the forward with an exception, so
the blocks after the deepest tap never run. Submodules that the probe saw never start before
that stop (the remaining blocks, the final norm, the head) are dropped with their parameters.

What a hook keeps: a tensor as it is; the first element of a tuple or list (transformers' layers
return ``(hidden_states, ...)``); ``last_hidden_state`` of a mapping (transformers' outputs).
Anything else is an error naming the type. Token outputs ``(N, L, D)`` are laid out as patch maps
by :class:`~perceptual_loss.backbones.tokens.TokenLayout`, in the extractor, for every path.

A tapped output that a later in-place op of the module would overwrite (seen by its version
counter during the probe) is cloned when kept; a tap is otherwise the module's tensor itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..frozen import mode_free

LOGITS = "logits"
"""The tap name of a module's own output (a classifier's logits)."""


class TapError(ValueError):
    """A tap that cannot be kept: never reached, run twice, or not a tensor."""


class _StopForward(Exception):
    """Raised by the hook of the deepest tap: nothing after it runs."""


class _Hook:
    """The forward hook of one tapped submodule (an object, so that a deep copy of the trunk
    gets hooks pointing at the copy)."""

    def __init__(self, trunk: HookedTrunk, module_name: str) -> None:
        self.trunk, self.module_name = trunk, module_name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.trunk._keep(self.module_name, output)


class _Pruned(nn.Module):
    """Stands in for a submodule that never runs before the early stop (its parameters are dropped)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.name} was dropped as never reached before the deepest tap, yet it ran.")

    def extra_repr(self) -> str:
        return f"{self.name!r}, dropped: runs after the deepest tap"


def module_tensor(output: Any, module_name: str) -> Tensor:
    """The tensor a tapped submodule's output stands for (see the module doc)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, Mapping) and isinstance(output.get("last_hidden_state"), Tensor):
        return output["last_hidden_state"]
    raise TapError(
        f"The module {module_name!r} returns {type(output).__name__}, which is neither a tensor, a tuple or list "
        f"starting with one (transformers' layers), nor a mapping with 'last_hidden_state'. Tap a submodule that "
        f"returns a tensor (e.g. one of its children)."
    )


@mode_free
class HookedTrunk(nn.Module):
    """A private copy of a module, run until its deepest tapped submodule; returns ``{tap: tensor}``.

    Args:
        model: the copy to run (owned by this trunk; hooks are added to it).
        taps: names of submodules of ``model``; ``logits`` is the module's own output (then the
            whole forward runs).
        name: the module's name, for messages.
    """

    def __init__(self, model: nn.Module, taps: Sequence[str], name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.taps = tuple(taps)
        self.wants_logits = LOGITS in self.taps
        self.module_names = tuple(t for t in self.taps if t != LOGITS)
        self.clone = frozenset[str]()
        """Taps that a later in-place op would overwrite: cloned when kept (found by :func:`inspect_run`)."""
        self.size_note = ""
        """What input sizes the module takes, for the error when it refuses one."""
        self.ready = False
        """Set once probed: before that, errors pass through as they are and taps are not checked
        for in-place writes (the probe is what finds them)."""
        self.stop_early = True
        self._kept: dict[str, tuple[Tensor, int]] | None = None
        for module_name in self.module_names:
            model.get_submodule(module_name).register_forward_hook(_Hook(self, module_name))

    def _keep(self, module_name: str, output: Any) -> None:
        kept = self._kept
        if kept is None:  # the module run outside this trunk's forward
            return
        if module_name in kept:
            raise TapError(
                f"The module {module_name!r} of {self.name} runs more than once in one forward pass, so it is no "
                "single tap. Tap a module that runs once (e.g. its parent block)."
            )
        tensor = module_tensor(output, module_name)
        if module_name in self.clone:
            tensor = tensor.clone()
        kept[module_name] = (tensor, tensor._version)
        if self.stop_early and not self.wants_logits and len(kept) == len(self.module_names):
            raise _StopForward

    def run(self, x: Tensor) -> tuple[dict[str, tuple[Tensor, int]], Any]:
        """``({submodule: (output, its version when kept)}, the module's output or None if stopped)``."""
        self._kept = {}
        try:
            logits = self.model(x)
        except _StopForward:
            logits = None
        except (TapError, torch.OutOfMemoryError):
            raise
        except Exception as error:
            if not self.ready:  # probing: the probe reads the error
                raise
            raise ValueError(
                f"{self.name} refused an input of {x.shape[-2]}x{x.shape[-1]} pixels (after resize): "
                f"{type(error).__name__}: {str(error).rstrip('.')}. {self.size_note}"
            ) from error
        finally:
            kept, self._kept = self._kept, None
        missing = [t for t in self.module_names if t not in kept]
        if missing:
            raise TapError(
                f"The tap(s) {missing} of {self.name} never ran in its forward pass (a module used only in "
                "training, or by another method than forward). Tap modules that forward calls."
            )
        return kept, logits

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        kept, logits = self.run(x)
        changed = [t for t, (tensor, version) in kept.items() if tensor._version != version]
        if changed and self.ready:
            raise RuntimeError(
                f"An in-place op of {self.name} overwrote the tap(s) {changed} after they ran, which the probe did "
                "not see (a data-dependent path). Tap another module, e.g. the parent block."
            )
        features = {t: kept[t][0] for t in self.module_names}
        if self.wants_logits:
            if not isinstance(logits, Tensor):
                raise TapError(
                    f"{self.name} returns {type(logits).__name__}, not one tensor, so it has no 'logits' tap; tap "
                    "a submodule by name."
                )
            features[LOGITS] = logits
        return {t: features[t] for t in self.taps}


def check_module_taps(model: nn.Module, taps: Sequence[str], reason: str) -> None:
    """Every tap is a submodule name (or ``logits``); otherwise ``reason`` (why fx could not be
    used) and the nearest names, as a ``ValueError``."""
    names = [n for n, _ in model.named_modules() if n]
    known = set(names)
    for tap in taps:
        if tap != LOGITS and tap not in known:
            close = difflib.get_close_matches(tap, names, n=5, cutoff=0.5)
            hint = f" Nearest module names: {', '.join(close)}." if close else ""
            raise ValueError(
                f"{reason} {tap!r} is not one of its {len(names)} submodule names.{hint} "
                f"perceptual_loss.available_taps(model) lists them."
            )


def inspect_run(trunk: HookedTrunk, x: Tensor, to_the_end: bool = True) -> tuple[set[str], set[str]]:
    """Run ``trunk`` on ``x`` without autograd: ``(names of the submodules that started before it
    stopped, taps whose tensor a later in-place op changed)``; then, ``to_the_end``, once more
    without stopping, which raises if a tapped module runs more than once. ``x`` may be on meta."""
    entered: set[str] = set()
    handles = [
        module.register_forward_pre_hook(lambda m, a, name=name: entered.add(name))
        for name, module in trunk.model.named_modules()
    ]
    try:
        with torch.no_grad():
            kept, _ = trunk.run(x)
    finally:
        for handle in handles:
            handle.remove()
    if to_the_end:
        trunk.stop_early = False
        try:
            with torch.no_grad():
                trunk.run(x)
        finally:
            trunk.stop_early = True
    return entered, {t for t, (tensor, version) in kept.items() if tensor._version != version}


def prune(model: nn.Module, entered: set[str]) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every outermost submodule with tensors that never started, and none of whose
    submodules did, by a :class:`_Pruned`; returns what was replaced as ``(parent, attribute,
    module)``, for :func:`restore`."""
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    # containers that are never called themselves (an nn.ModuleList of blocks) count as entered
    # when anything inside them started
    reached = {".".join(name.split(".")[:depth]) for name in entered for depth in range(1, name.count(".") + 2)}

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in list(module.named_children()):
            name = f"{prefix}{child_name}"
            if name not in reached:
                if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                    replaced.append((module, child_name, child))
                    setattr(module, child_name, _Pruned(name))
            else:
                visit(child, f"{name}.")

    visit(model, "")
    return replaced


def restore(replaced: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent, attribute, module in replaced:
        setattr(parent, attribute, module)
