"""The terms of :class:`~perceptual_loss.CombinedLoss`: how each is configured, checked and (for image terms) computed.

Backbone terms (perceptual, style, LPIPS, DISTS, contextual) become a
:class:`~perceptual_loss.losses.Comparison` that shares its backbone's pass; image terms (SSIM,
MS-SSIM, focal frequency, FFT) sit beside the pixel ones; the adversarial term and the slicing of
5-D input have their own options.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .adversarial import ADVERSARIAL_KINDS
from .frequency import fft_distance, focal_frequency_distance
from .losses import (
    Comparison,
    ContextualComparison,
    DISTSComparison,
    LPIPSComparison,
    PerceptualComparison,
    StyleComparison,
)
from .losses.options import VIEW_OPTIONS
from .losses.perceptual import preset_arguments
from .sliced import VOLUME_DIMS, Slicing, check_generator
from .structural import MS_SSIM_WEIGHTS
from .structural import ms_ssim as ms_ssim_index
from .structural import ssim as ssim_index

COMPARISONS: dict[str, type[Comparison]] = {
    "perceptual": PerceptualComparison,
    "style": StyleComparison,
    "lpips": LPIPSComparison,
    "dists": DISTSComparison,
    "contextual": ContextualComparison,
}

IMAGE_TERM_OPTIONS: dict[str, tuple[str, ...]] = {
    "ssim": ("win_size", "sigma", "k"),
    "ms_ssim": ("win_size", "sigma", "k", "weights"),
    "focal_frequency": ("alpha", "patch_factor", "log_matrix"),
    "fft": ("norm",),
}
"""The image terms (no backbone) beside the pixel ones, and the options each takes in ``CombinedLoss``."""


def term_configs(kind: str, config: Mapping[str, Any] | None) -> list[tuple[str, float, dict[str, Any]]]:
    """``[(part name, weight, options)]`` of one kind of term: none, one, or several named ones.

    ``{"weight": w, ...options}`` is one term named ``kind``; ``{"vgg": {...}, "logits": {...}}``
    (every value a mapping, no key an option) are terms named ``kind/vgg``, ``kind/logits``.
    A term whose weight is 0 is left out.
    """
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise TypeError(f"{kind} must be a mapping like {{'weight': 0.1, ...}} or None; got {type(config).__name__}.")
    parameters = inspect.signature(COMPARISONS[kind]).parameters.values()
    options = {"weight", "weights", "preset", *VIEW_OPTIONS, *(p.name for p in parameters if p.kind != p.VAR_KEYWORD)}
    named = bool(config) and all(isinstance(v, Mapping) for v in config.values()) and not set(config) & options
    terms = [(f"{kind}/{name}", sub) for name, sub in config.items()] if named else [(kind, config)]
    built = []
    for name, sub in terms:
        if not isinstance(sub, Mapping):
            raise TypeError(f"{name} must be a mapping like {{'weight': 0.1, ...}}; got {type(sub).__name__}.")
        sub = dict(sub)
        weight = float(sub.pop("weight", 1.0))
        if weight:
            built.append((name, weight, sub))
    return built


def build_comparison(kind: str, options: Mapping[str, Any]) -> Comparison:
    if "preset" in options:
        if kind != "perceptual":
            raise ValueError(f"preset= is for the perceptual term; {kind} has none.")
        rest = {k: v for k, v in options.items() if k != "preset"}
        options = preset_arguments(options["preset"], rest)
    if options.get("spatial"):
        raise ValueError(
            f"{kind}.spatial is not supported in CombinedLoss (it sums scalar terms); use the loss's own spatial=True."
        )
    try:
        return COMPARISONS[kind](**options)
    except TypeError as error:
        raise TypeError(
            f"Bad option for the {kind} term: {error}. Valid keys: weight, weights and the arguments of "
            f"{COMPARISONS[kind].__name__}."
        ) from None


def image_term(kind: str, config: float | Mapping[str, Any] | None) -> tuple[float, dict[str, Any]]:
    """``(weight, options)`` of an image term given as a weight or ``{"weight": w, ...options}``."""
    if config is None:
        return 0.0, {}
    if isinstance(config, (int, float)) and not isinstance(config, bool):
        weight, options = float(config), {}
    elif isinstance(config, Mapping):
        options = dict(config)
        weight = float(options.pop("weight", 1.0))
        unknown = sorted(set(options) - set(IMAGE_TERM_OPTIONS[kind]))
        if unknown:
            extra = (
                " (ave_spectrum and batch_matrix mix the samples: use FocalFrequencyLoss for them)"
                if kind == "focal_frequency"
                else ""
            )
            raise TypeError(
                f"Unknown {kind} option(s) {unknown}; valid: weight, {', '.join(IMAGE_TERM_OPTIONS[kind])}{extra}."
            )
    else:
        raise TypeError(f"{kind} must be a weight or a mapping like {{'weight': 0.84}}; got {type(config).__name__}.")
    if not (weight >= 0 and weight != float("inf")):
        raise ValueError(f"{kind} weight must be finite and >= 0; got {weight!r}.")
    return weight, options


def image_min_size(kind: str, options: Mapping[str, Any]) -> int:
    """The smallest side an image term takes: SSIM's window, MS-SSIM's window at its coarsest scale."""
    window = int(options.get("win_size", 11))
    if kind == "ssim":
        return window
    if kind == "ms_ssim":
        return (window - 1) * 2 ** (len(options.get("weights", MS_SSIM_WEIGHTS)) - 1) + 1
    return 1


def image_values(
    kind: str,
    options: Mapping[str, Any],
    input_range: tuple[float, float],
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None,
) -> Tensor:
    """``(N,)`` values of an image term; SSIM and MS-SSIM see the images mapped to ``[0, 1]``."""
    if mask is not None and kind != "ssim":
        raise ValueError(f"The {kind} term takes no mask (it mixes every region of the image); drop it or the mask.")
    if kind in ("ssim", "ms_ssim"):
        low, high = input_range
        if (low, high) != (0.0, 1.0):
            pred, target = (pred - low) / (high - low), (target - low) / (high - low)
        if kind == "ssim":
            return 1 - ssim_index(pred, target, 1.0, mask=mask, **options)
        return 1 - ms_ssim_index(pred, target, 1.0, **options)
    if kind == "focal_frequency":
        return focal_frequency_distance(pred, target, **options)
    return fft_distance(pred, target, **options)


def parse_slices(config: Mapping[str, Any]) -> Slicing:
    if not isinstance(config, Mapping):
        raise TypeError(
            f"slices must be a mapping like {{'dims': (2,), 'per_sample': 4}}; got {type(config).__name__}."
        )
    unknown = set(config) - {"dims", "ratio", "per_sample", "generator"}
    if unknown:
        raise TypeError(f"Unknown slices option(s) {sorted(unknown)}; valid: dims, ratio, per_sample, generator.")
    check_generator(config.get("generator"), "slices['generator']")
    return Slicing(tuple(config.get("dims", VOLUME_DIMS)), config.get("ratio"), config.get("per_sample"))


def parse_adversarial(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    options = {"weight": 1.0, "kind": "vanilla", "adaptive": False, "start_step": 0, "max_weight": 1e4}
    unknown = set(config) - set(options)
    if unknown:
        raise TypeError(f"Unknown adversarial option(s) {sorted(unknown)}; valid: {sorted(options)}.")
    options.update(config)
    if options["kind"] not in ADVERSARIAL_KINDS:
        raise ValueError(f"Unknown adversarial kind {options['kind']!r}; choose one of {ADVERSARIAL_KINDS}.")
    options["weight"], options["start_step"] = float(options["weight"]), int(options["start_step"])  # type: ignore[arg-type,call-overload]
    return options if options["weight"] else None
