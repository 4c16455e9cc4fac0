"""Any torchvision classifier, or the user's own module, as a traced trunk tapped by node name.

Node names are those of :func:`torchvision.models.feature_extraction.get_graph_node_names` in
eval mode (``layer2``, ``layer4.2.relu_2``, ``features.3``, ``encoder.layers.encoder_layer_5``),
plus ``logits``: the node that feeds the model's output. A name that is a prefix of node names
(``layer2``, a module) taps the last node under it, as ``create_feature_extractor`` does.

The graph is traced once in eval mode, and everything after the deepest tap is removed with the
parameters only it used (a ``layer2`` tap of ResNet-50 keeps 6% of its parameters). Then three
rewrites keep the guarantees of the classic trunks:

- an in-place op that would overwrite a tapped tensor (ResNet's ``relu`` after ``add``, a ReLU
  after a tapped BatchNorm) becomes out-of-place at that call only, so a pre-activation tap stays
  pre-activation; the same module elsewhere keeps working in place (a tap written through a view
  is cloned instead);
- every BatchNorm becomes a :class:`~.layers.FrozenBatchNorm`: eval-mode arithmetic, statistics
  that no ``.train()`` can update and DDP does not re-broadcast;
- every max-pool becomes a :class:`~.layers.MaxPool2dRecomputingIndices` (no int64 argmax kept).

A user's module is never changed: it is traced through a structural copy that shares no module
object with it, and the kept parameters are copied, so neither its ``requires_grad`` flags, its
mode, nor its device move with the loss.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, fx, nn
from torchvision.models.feature_extraction import NodePathTracer

from ..frozen import mode_free
from .hooks import LOGITS
from .inputs import IMAGES, InputSpec
from .layers import FrozenBatchNorm, MaxPool2dRecomputingIndices

logger = logging.getLogger(__name__)


_VIEW_METHODS = frozenset(
    [
        "view",
        "reshape",
        "flatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "expand",
        "narrow",
        "t",
        "view_as",
        "reshape_as",
        "chunk",
        "split",
        "unbind",
        "unflatten",
        "movedim",
        "__getitem__",
        "detach",
    ]
)
_VIEW_FUNCTIONS = frozenset(
    [operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
     torch.narrow, torch.chunk, torch.split, torch.unbind, torch.movedim, torch.t]
)  # fmt: skip
# torchvision's blocks that the trace keeps whole and whose forward never reads the mode flag.
for _block in (
    torchvision.ops.SqueezeExcitation,
    torchvision.ops.Permute,
    torchvision.models.convnext.LayerNorm2d,
    torchvision.models.squeezenet.Fire,
):
    mode_free(_block)

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, torchvision.ops.StochasticDepth)
"""Modules that (in eval mode) may return their input itself or a view of it."""
_INPLACE_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv, torch.relu_: torch.relu, torch.nn.functional.relu_: torch.nn.functional.relu,
}  # fmt: skip


class TraceError(ValueError):
    """torch.fx cannot trace the module; the message says where and how to proceed."""


@dataclass(frozen=True)
class GraphInfo:
    """What probing a trunk (on the meta device where it can) found out."""

    min_size: int
    fixed_size: int | None
    shapes: dict[str, tuple[int, ...]]
    """Each tap's output shape for one image of :attr:`size`."""
    size: tuple[int, int]
    multiple: int | None = None
    """Set when the trunk takes whole patches only (timm's dynamic-size ViTs): sides must be multiples of it."""

    @property
    def dims(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.shapes.items()}


def _tracer(leaves: Sequence[str] = ()) -> NodePathTracer:
    """torchvision's node-naming tracer, with its defaults (``torchvision.ops`` wrapped and leaves)."""
    ops = [getattr(torchvision.ops, name) for name in dir(torchvision.ops)]
    leaf_types = [op for op in ops if isinstance(op, type) and issubclass(op, nn.Module)]
    tracer = _LeafNamedTracer(autowrap_modules=(math, torchvision.ops), leaf_modules=leaf_types)
    tracer.leaf_names = frozenset(leaves)
    return tracer


class _LeafNamedTracer(NodePathTracer):
    """Also treats modules by qualified name as leaves (the user's taps, when tracing needs it)."""

    leaf_names: frozenset[str] = frozenset()
    failed_in: str | None = None
    """The innermost module whose forward raised while tracing (for the error message)."""

    def is_leaf_module(self, m: nn.Module, module_qualname: str) -> bool:
        return module_qualname in self.leaf_names or super().is_leaf_module(m, module_qualname)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise


def trace(model: nn.Module, name: str, leaves: Sequence[str] = ()) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """The eval-mode graph of ``model`` and each node's torchvision node name.

    ``model`` must already be in eval mode (the caller's copy). Raises :class:`TraceError`.
    """
    tracer = _tracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as error:
        where = f"inside {tracer.failed_in!r}" if tracer.failed_in else "in its own forward"
        example = f"e.g. taps=[{tracer.failed_in!r}] or a module above it" if tracer.failed_in else "e.g. its children"
        raise TraceError(
            f"torch.fx cannot trace {name}: {where} it failed with {type(error).__name__}: {error}. "
            f"Usually this is Python control flow on tensor values or shapes. To proceed: tap whole "
            f"submodules by their names in model.named_modules() (they are then traced as leaves, or run "
            f"with forward hooks), {example}."
        ) from error
    return graph, dict(tracer.node_to_qualname)


def node_names(graph: fx.Graph, qualnames: Mapping[fx.Node, str]) -> list[str]:
    """Tap names in network order: every node but the input, then ``logits`` if the output is one tensor."""
    names = [qualnames[n] for n in graph.nodes if n in qualnames and n.op != "placeholder"]
    return names + ([LOGITS] if _logits_node(graph) is not None else [])


def _logits_node(graph: fx.Graph) -> fx.Node | None:
    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    return result if isinstance(result, fx.Node) else None


def resolve_taps(
    taps: Sequence[str],
    graph: fx.Graph,
    qualnames: Mapping[fx.Node, str],
    name: str,
    aliases: Mapping[str, str] | None = None,
) -> dict[str, fx.Node]:
    """``{tap: node}``: an alias, an exact node name, a prefix of node names (the last node under
    it), or ``logits``."""
    aliases = aliases or {}
    by_name = {q: n for n, q in qualnames.items() if n.op != "placeholder"}
    resolved: dict[str, fx.Node] = {}
    for requested in taps:
        tap = aliases.get(requested, requested)
        if tap == LOGITS:
            node = _logits_node(graph)
            if node is None:
                raise ValueError(f"{name} returns no single tensor, so it has no 'logits' tap; tap a node by name.")
        else:
            node = by_name.get(tap)
            if node is None:
                under = [n for q, n in by_name.items() if q.startswith(tap + ".")]
                node = under[-1] if under else None
        if node is None:
            raise ValueError(
                unknown_tap_message(requested, [*aliases, *node_names(graph, qualnames)], name, list(aliases))
            )
        resolved[requested] = node
    return resolved


def unknown_tap_message(tap: str, valid: Sequence[str], name: str, classic: Sequence[str] = ()) -> str:
    close = difflib.get_close_matches(tap, valid, n=5, cutoff=0.5)
    hint = f" Nearest valid names: {', '.join(close)}." if close else ""
    listed = f" Its classic names (valid names: {', '.join(classic)}) and" if classic else ""
    return (
        f"Unknown layer name {tap!r} for {name}.{hint}{listed} perceptual_loss.available_taps({name!r}) lists all "
        f"{len(valid)} of them (torchvision's node names{', plus logits' if LOGITS in valid else ''})."
    )


def truncated_module(root: nn.Module, graph: fx.Graph, taps: Mapping[str, fx.Node], name: str) -> fx.GraphModule:
    """A graph module returning ``{tap: value}``, with nothing after the deepest tap and safe in-place ops.

    ``graph`` (traced from ``root``, which holds the modules it calls) is rewritten in place.
    """
    whole = fx.GraphModule(root, graph)
    for node in [n for n in whole.graph.nodes if n.op == "output"]:
        whole.graph.erase_node(node)
    with whole.graph.inserting_after(list(whole.graph.nodes)[-1]):
        whole.graph.output(dict(taps))
    # An in-place op whose result nobody reads still matters when it runs before a tap (it may
    # write into a tensor the tap depends on); fx's dead-code pass would drop it.
    order = {node: index for index, node in enumerate(whole.graph.nodes)}
    deepest = max(order[node] for node in taps.values())
    whole.graph.eliminate_dead_code(
        is_impure_node=lambda n: n.is_impure() or (order[n] < deepest and _is_inplace(whole, n))
    )
    # A second graph module copies only what the remaining nodes use: the rest of the model's
    # modules and parameters are dropped.
    module = fx.GraphModule(whole, whole.graph, class_name=f"{type(root).__name__}Trunk")
    _make_taps_safe_from_inplace(module, set(taps.values()))
    module.graph.lint()
    module.recompile()
    logger.debug("%s traced and truncated to %d nodes", name, len(module.graph.nodes))
    return module


def _make_taps_safe_from_inplace(module: fx.GraphModule, tapped: set[fx.Node]) -> None:
    """Keep every tapped tensor as it was computed, whatever in-place op follows it.

    The common case (ResNet's ``relu`` after ``add``, a ReLU after a tapped BatchNorm) is an
    in-place op applied to the tapped tensor itself, with no view of it anywhere: that op runs
    out of place, and whatever read the tensor after it reads its result instead (no memory
    cost). When a view or an eval-mode identity of the tapped tensor exists and something writes
    in place through one, the model relies on that aliasing: the tap is cloned instead.
    """
    graph = module.graph
    order = {node: index for index, node in enumerate(graph.nodes)}
    output = next(n for n in graph.nodes if n.op == "output")
    for node in sorted(tapped, key=order.__getitem__):
        aliases, writers = _aliases_and_writers(module, node)
        if not writers:
            continue
        direct = [w for w in writers if w.args[0] is node]
        if len(aliases) == 1 and direct:
            first = min(direct, key=order.__getitem__)
            _make_out_of_place(module, first)
            for user in list(node.users):
                if user is not output and user is not first and order[user] > order[first]:
                    user.replace_input_with(node, first)
        else:
            with graph.inserting_after(node):
                kept = graph.call_method("clone", (node,))
            output.replace_input_with(node, kept)


def _aliases_and_writers(module: fx.GraphModule, node: fx.Node) -> tuple[list[fx.Node], list[fx.Node]]:
    """The nodes that may share ``node``'s memory (itself included), and the in-place ops on them."""
    aliases, writers, frontier = [], [], [node]
    while frontier:
        current = frontier.pop()
        if current in aliases:
            continue
        aliases.append(current)
        for user in current.users:
            if not user.args or user.args[0] is not current:
                continue
            if _may_alias(module, user):  # a view, or an identity in eval mode
                frontier.append(user)
            if _is_inplace(module, user):
                writers.append(user)
    return aliases, writers


def _is_inplace(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_module":
        return getattr(module.get_submodule(str(node.target)), "inplace", False) is True
    if node.op == "call_method":
        target = str(node.target)
        return target.endswith("_") and not target.startswith("_")
    return node.op == "call_function" and node.target in _INPLACE_FUNCTIONS


def _may_alias(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), _IDENTITY_MODULES)
    if node.op == "call_method":
        return node.target in _VIEW_METHODS
    return node.op == "call_function" and node.target in _VIEW_FUNCTIONS


def _make_out_of_place(module: fx.GraphModule, node: fx.Node) -> None:
    if "inplace" in node.kwargs:
        node.kwargs = {**node.kwargs, "inplace": False}
    elif node.op == "call_module":
        original = module.get_submodule(str(node.target))
        replacement = copy.deepcopy(original)  # an activation: no parameters to speak of; only this call changes
        replacement.inplace = False  # type: ignore[assignment]
        target = f"{str(node.target).replace('.', '_')}_out_of_place"
        module.add_submodule(target, replacement)
        node.target = target
    elif node.op == "call_method":
        node.target = str(node.target)[:-1]
    else:
        node.target = _INPLACE_FUNCTIONS[node.target]  # type: ignore[index]


def freeze_layers(module: nn.Module) -> None:
    """BatchNorm -> :class:`FrozenBatchNorm`, max-pool -> :class:`MaxPool2dRecomputingIndices`, in place."""
    for parent in list(module.modules()):
        for child_name, child in parent.named_children():
            replacement: nn.Module | None = None
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
                replacement = FrozenBatchNorm(child)
            elif type(child) is nn.MaxPool2d and not child.return_indices:
                replacement = MaxPool2dRecomputingIndices(
                    child.kernel_size, child.stride, child.padding, child.dilation, ceil_mode=child.ceil_mode
                )
            if replacement is not None:
                setattr(parent, child_name, replacement)


def probe(
    module: nn.Module,
    name: str,
    limit: int = 1024,
    hint: int = 224,
    size: tuple[int, int] | None = None,
    patch: int | None = None,
    spec: InputSpec = IMAGES,
) -> GraphInfo:
    """Smallest square (or cubic, see ``spec``) input size, a fixed size if only one works (ViT: 224), and each tap's shape.

    Runs ``module`` on the meta device (nothing is computed) at a few sizes, assuming that a size
    that works makes every larger one work too, unless twice that size fails (then only that
    size counts). ``hint``: the size to try first (the module's own, if it says). ``size``: every
    call will be resized to it: only that size is tried. A module that cannot run on meta is
    probed for real, without autograd.
    """
    reference = next(iter(module.parameters()), torch.empty(0))
    try:
        return _probe(_shape_only_copy(module), "meta", limit, hint, size, patch, spec)
    except _NothingFits as error:
        if reference.is_meta:
            raise ValueError(_nothing_fits_message(name, error)) from None
    with torch.no_grad():
        try:
            return _probe(module, reference, limit, hint, size, patch, spec)
        except _NothingFits as error:
            raise ValueError(_nothing_fits_message(name, error)) from None


def _nothing_fits_message(name: str, error: _NothingFits) -> str:
    sizes = " or ".join(f"{h}x{w}" for h, w in error.sizes)
    return (
        f"{name} does not run on test inputs of {sizes} pixels: {error.reason}. If it takes one size only, pass "
        "resize=<that size>."
    )


def _shape_only_copy(module: nn.Module) -> nn.Module:
    """A meta copy with normalisation layers (shape-preserving, slow on meta) replaced by identities."""
    shapes = meta_copy(module)
    for parent in list(shapes.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm)):
                setattr(parent, child_name, nn.Identity())
    return shapes


class _NothingFits(Exception):
    def __init__(self, sizes: Sequence[tuple[int, int]], reason: str) -> None:
        super().__init__(reason)
        self.sizes, self.reason = tuple(sizes), reason


def _probe(
    module: nn.Module,
    like: str | Tensor,
    limit: int,
    hint: int,
    size: tuple[int, int] | None,
    patch: int | None,
    spec: InputSpec = IMAGES,
) -> GraphInfo:
    reasons: list[str] = []

    def run(height: int, width: int | None = None) -> dict[str, Tensor] | None:
        shape = spec.shape(height) if width is None else spec.shape(height, width)
        if isinstance(like, str):
            x = torch.empty(shape, device=like)
        else:
            x = torch.zeros(shape, device=like.device, dtype=like.dtype)
        try:
            out = module(x)
        except Exception as error:
            reasons.append(f"{type(error).__name__}: {error}")
            return None
        fits = all(v.dim() < 4 or min(v.shape[2:]) >= 1 for v in out.values())
        return out if fits else None

    def info(out: dict[str, Tensor], min_size: int, fixed: int | None, multiple: int | None = None) -> GraphInfo:
        at = size or (min_size, min_size)
        return GraphInfo(min_size, fixed, {k: tuple(v.shape) for k, v in out.items()}, at, multiple)

    if size is not None:
        out = run(*size)
        if out is None:
            raise _NothingFits([size], reasons[-1] if reasons else "a tap has an empty feature map")
        return info(out, min(size), None)
    sizes = (hint, 2 * hint, limit)
    high = next((s for s in sizes if run(s) is not None), None)
    if high is None:
        raise _NothingFits([(s, s) for s in sizes], reasons[-1] if reasons else "a tap has an empty feature map")
    if patch and high % patch == 0 and run(high + 1) is None and run(2 * high) is not None:
        low, high = 0, high // patch  # in patches: run(low * patch) fails or low == 0
        while high - low > 1:
            middle = (low + high) // 2
            if run(middle * patch) is None:
                low = middle
            else:
                high = middle
        out = run(high * patch)
        assert out is not None
        return info(out, high * patch, None, patch)
    low = 0  # run(low) fails or low == 0; run(high) works
    while high - low > 1:
        middle = (low + high) // 2
        if run(middle) is None:
            low = middle
        else:
            high = middle
    fixed = high if all(run(s) is None for s in {2 * high, max(limit, high + 1)}) else None
    out = run(high)
    assert out is not None
    return info(out, high, fixed)


def meta_copy(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` whose parameters and buffers are empty meta tensors."""
    memo: dict[int, Any] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, requires_grad=False) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(module, memo)


def detached_copy(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` that shares its tensors: cheap, and no module object is shared."""
    memo: dict[int, Any] = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def own_tensors(module: nn.Module) -> None:
    """Replace every parameter and buffer of ``module`` by a copy (so the user's stay untouched)."""
    for sub in module.modules():
        for key, value in sub._parameters.items():
            if value is not None:
                sub._parameters[key] = nn.Parameter(value.detach().clone(), requires_grad=False)
        for key, buffer in sub._buffers.items():
            if buffer is not None:
                sub._buffers[key] = buffer.detach().clone()
