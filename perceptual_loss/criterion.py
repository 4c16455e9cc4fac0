"""``CombinedLoss``: pixel + perceptual + style + LPIPS + DISTS + TV + adversarial, one backbone pass each.

Terms that look at the same backbone with the same input normalisation (e.g. perceptual, style
and LPIPS-vgg v0.1 on VGG16) share ONE frozen extractor, truncated at the deepest tap any of them
needs: one forward pass of the prediction (with autograd) and one of the target (without), whose
features every term's :class:`~perceptual_loss.losses.Comparison` reuses. Fixed targets (a style
image, a content image) can be cached with :meth:`CombinedLoss.set_target`; later calls then skip
the target pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from .adversarial import adaptive_weight, generator_loss
from .backbones import FeatureExtractor
from .budget import describe, parse_memory, plan_memory
from .chunks import check_positive, chunked_values
from .losses import Comparison
from .losses._base import MaskMode, View, check_mask_mode, reduce, tap_masks
from .pixel import PIXEL_DISTANCES, charbonnier_distance, total_variation
from .sliced import check_volumes, take_slices
from .terms import (
    build_comparison,
    image_min_size,
    image_term,
    image_values,
    parse_adversarial,
    parse_slices,
    term_configs,
)
from .validation import (
    Channels,
    Grayscale,
    check_image,
    check_mask,
    check_module_compatible,
    check_pair,
    check_range,
    check_size,
    split_channels,
)
from .weights import WeightsArg

logger = logging.getLogger(__name__)


class LossOutput(NamedTuple):
    """What :class:`CombinedLoss` returns: unpack as ``total, parts = criterion(pred, target)``.

    ``total`` is the weighted sum to call ``backward()`` on; ``parts`` maps each active term to
    its **unweighted**, detached value (``total == sum(weight[k] * parts[k])``), plus
    ``"adversarial_weight"`` when the adversarial weight is adaptive.
    """

    total: Tensor
    parts: dict[str, Tensor]


class CombinedLoss(nn.Module):
    """Weighted sum of pixel, perceptual, style, LPIPS, DISTS, total-variation and adversarial terms.

    Args:
        l1, l2, charbonnier: weights of the pixel terms (0 = off). ``charbonnier_eps`` sets
            Charbonnier's ``eps`` (default 1e-3).
        perceptual: ``{"weight": w, "layers": [...], "backbone": "vgg16", "distance": "l1"}``
            (keys after ``weight`` as in :class:`~perceptual_loss.PerceptualLoss`: ``backbone``,
            ``resize``, ``mean``, ``std``, ``normalize``, ``pooling``, ``pool_stride``, ``weights``
            to override the criterion's, and ``preset``: ``{"weight": 1.0, "preset":
            "real_esrgan"}``, see :data:`perceptual_loss.losses.perceptual.PRESETS`), or
            ``None``. Several terms of one kind: a mapping of names to such mappings, e.g.
            ``{"vgg": {...}, "logits": {"backbone": "convnext_small", "layers": ["logits"], ...}}``;
            their parts are named ``perceptual/vgg``, ``perceptual/logits``.
        style: ``{"weight": w, "layers": [...], ...}`` as in :class:`~perceptual_loss.StyleLoss`
            (several: named, as for ``perceptual``).
        lpips: ``{"weight": w, "net": "vgg", "version": "0.1"}`` as in
            :class:`~perceptual_loss.LPIPSLoss` (no ``spatial``).
        dists: ``{"weight": w}`` (and ``dists_weights``, ``resize`` as in
            :class:`~perceptual_loss.DISTSLoss`): DISTS on its own L2-pooled VGG16 pass.
        ssim, ms_ssim: ``1 - SSIM`` and ``1 - MS-SSIM`` (as :class:`~perceptual_loss.SSIMLoss`,
            on the images mapped from ``input_range`` to ``[0, 1]``): a weight, or ``{"weight": w,
            "win_size": 11, "sigma": 1.5, "k": (0.01, 0.03)}`` (``"weights"`` for MS-SSIM's
            scales). Zhao et al.'s mix: ``l1=0.16, ms_ssim=0.84``.
        focal_frequency: a weight or ``{"weight": w, "alpha": 1.0, "patch_factor": 1,
            "log_matrix": False}`` (:func:`~perceptual_loss.focal_frequency_distance`).
        fft: a weight or ``{"weight": w, "norm": "backward"}``: the FFT L1 of deblurring models.
        contextual: ``{"weight": w, "layers": ["relu4_2"], "backbone": "vgg19", "bandwidth":
            0.5, "spatial_weight": 0.0}`` as :class:`~perceptual_loss.ContextualLoss`, sharing the
            backbone's pass with the other terms on it.
        tv: weight of total variation of the prediction.
        adversarial: ``{"weight": w, "kind": "vanilla"|"lsgan"|"hinge"|"wgan"|"relativistic",
            "adaptive": False, "start_step": 0, "max_weight": 1e4}``; see :meth:`forward`.
        weights: backbone weights for every term that does not set its own ``weights``:
            ``"imagenet"`` | a weights enum name | path | ``None`` (tests only).
        input_range, grayscale, channels, check_inputs, mask_mode, chunk_size, max_memory: as for every loss
            (see :mod:`perceptual_loss.losses.options`); ``mask_mode`` applies to every backbone
            term, ``chunk_size`` to every term but the adversarial one: the criterion runs that
            many samples (slices, for 5-D input) at a time, each chunk's input gradient taken as
            it goes (see :mod:`perceptual_loss.chunks`), with the same total and parts.
        slices: for 5-D clips and volumes: ``{"dims": (2,), "per_sample": 4}`` or ``{"dims": (2, 3,
            4), "ratio": 0.5}`` (and ``"generator"``), as :class:`~perceptual_loss.SlicedLoss`
            takes them. Pixel terms compare the whole tensors; backbone terms and TV the slices
            drawn (averaged over slices, summed over dims), one backbone pass per side and dim.

    A term whose weight is 0 (or ``None``) is not built and costs nothing. Terms that look at the
    same backbone with the same weights and input policy share one pass of it per image.

    Shape:
        - pred: ``(N, 3, H, W)`` in ``input_range`` (``(N, C, T|D, H, W)`` with ``slices``);
          target: the same shape (style-only criteria accept other sizes), or omitted for
          terms with a cached target.
        - Output: :class:`LossOutput` of scalars.

    Example:
        >>> criterion = CombinedLoss(l1=1.0, perceptual={"layers": ["relu2_2"], "weight": 0.1},
        ...                          style={"layers": ["relu1_2"], "weight": 10.0}, weights=None)
        >>> pred, target = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
        >>> total, parts = criterion(pred, target)
        >>> total.backward()
        >>> sorted(parts), len(criterion.extractors)
        (['l1', 'perceptual', 'style'], 1)
    """

    min_size: int
    input_range: tuple[float, float]
    adversarial: dict[str, Any] | None
    same_size: bool

    def __init__(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        charbonnier: float = 0.0,
        perceptual: Mapping[str, Any] | None = None,
        style: Mapping[str, Any] | None = None,
        lpips: Mapping[str, Any] | None = None,
        tv: float = 0.0,
        adversarial: Mapping[str, Any] | None = None,
        weights: WeightsArg = "imagenet",
        input_range: Sequence[float] = (0.0, 1.0),
        grayscale: Grayscale = None,
        check_inputs: bool = True,
        charbonnier_eps: float = 1e-3,
        dists: Mapping[str, Any] | None = None,
        mask_mode: MaskMode = "area",
        chunk_size: int | None = None,
        channels: Channels = None,
        slices: Mapping[str, Any] | None = None,
        max_memory: int | str | None = None,
        ssim: float | Mapping[str, Any] | None = None,
        ms_ssim: float | Mapping[str, Any] | None = None,
        focal_frequency: float | Mapping[str, Any] | None = None,
        fft: float | Mapping[str, Any] | None = None,
        contextual: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.pixel_weights = {name: float(w) for name, w in (("l1", l1), ("l2", l2), ("charbonnier", charbonnier)) if w}
        self._image_options: dict[str, dict[str, Any]] = {}
        for kind, config in (("ssim", ssim), ("ms_ssim", ms_ssim), ("focal_frequency", focal_frequency), ("fft", fft)):
            weight, options = image_term(kind, config)
            if weight:
                self.pixel_weights[kind], self._image_options[kind] = weight, options
        self.charbonnier_eps = float(charbonnier_eps)
        self.tv_weight = float(tv)
        self.term_weights: dict[str, float] = {}
        self.comparisons = nn.ModuleDict()
        term_backbone_weights: dict[str, WeightsArg] = {}
        backbone_terms = (
            ("perceptual", perceptual), ("style", style), ("lpips", lpips), ("dists", dists), ("contextual", contextual),
        )  # fmt: skip
        for kind, config in backbone_terms:
            for name, weight, options in term_configs(kind, config):
                term_backbone_weights[name] = options.pop("weights", weights)
                self.term_weights[name], self.comparisons[name] = weight, build_comparison(kind, options)
        # A plain tuple, read on every call: torch.compile traces it without a graph break.
        self._target_terms: tuple[str, ...] = (*self.pixel_weights, *self.comparisons)
        self.adversarial = parse_adversarial(adversarial)
        if grayscale not in (None, "repeat"):
            raise ValueError(f"grayscale must be None or 'repeat'; got {grayscale!r}.")
        self.grayscale = grayscale
        if channels not in (None, "each"):
            raise ValueError(
                f"channels must be None or 'each' (score each channel as a grayscale image); got {channels!r}."
            )
        self.channels = channels
        self.check_inputs = check_inputs
        self.slicing = None if slices is None else parse_slices(slices)
        self.generator: torch.Generator | None = None if slices is None else slices.get("generator")

        # One extractor per view (backbone, weights, input policy), with the union of the taps of
        # the comparisons that share it.
        self.extractors = nn.ModuleDict()
        self._views: dict[str, list[str]] = {}
        keys: dict[tuple[View, Any], str] = {}
        for name, comparison in self.comparisons.items():
            assert isinstance(comparison, Comparison)
            term_weights = term_backbone_weights[name]
            view = (comparison.view.resolved(term_weights), _hashable(term_weights))
            if view not in keys:
                keys[view] = f"{comparison.backbone}_{len(keys)}"
                self._views[keys[view]] = []
            self._views[keys[view]].append(name)
        low, high = (float(v) for v in input_range)
        for key, members in self._views.items():
            first = self._comparison(members[0])
            taps = [tap for member in members for tap in self._comparison(member).taps]
            extractor = first.view.extractor(taps, term_backbone_weights[members[0]], (low, high))
            for member in members:
                self._comparison(member).check_features(extractor.tap_dims)
            check_mask_mode(mask_mode, extractor)
            self.extractors[key] = extractor
        self.mask_mode = mask_mode
        self.chunk_size = check_positive("chunk_size", chunk_size, "samples per chunk")
        self.max_memory = parse_memory(max_memory)
        if self.max_memory is not None and self.chunk_size is not None:
            raise ValueError("max_memory= picks chunk_size itself: give max_memory or chunk_size, not both.")
        self._plans: dict[tuple[Any, ...], int | None] = {}
        self.input_range = (low, high)
        self.min_size = max(
            [2 if self.tv_weight else 1, *(image_min_size(k, o) for k, o in self._image_options.items())]
            + [self._extractor(k).min_size for k in self._views]
        )
        fixed_sizes = {size for k in self._views if (size := self._extractor(k).fixed_size) is not None}
        if len(fixed_sizes) > 1:
            raise ValueError(
                f"Terms need different fixed input sizes {sorted(fixed_sizes)}: give each of them resize=."
            )
        self.fixed_size: int | None = next(iter(fixed_sizes), None)
        self.same_size = bool(self.pixel_weights) or any(c.same_size for c in self.comparisons.values())
        if not (self.pixel_weights or self.comparisons or self.tv_weight or self.adversarial):
            raise ValueError("CombinedLoss has no term: give at least one non-zero weight, e.g. l1=1.0.")
        self._cached: dict[str, Any] = {}
        self._warned, self._warned_mask = [False], [False]
        self._warned_adversarial = False

    # ------------------------------------------------------------------ targets

    @property
    def target_terms(self) -> list[str]:
        """Terms that compare against a target (pixel and backbone terms; not TV/adversarial)."""
        return list(self._target_terms)

    def set_target(self, target: Tensor, terms: Sequence[str] | None = None) -> None:
        """Cache a fixed target for ``terms`` (default: every term with a target).

        Backbone terms keep only what they compare against (e.g. Gram matrices for style), so
        later calls skip the target's backbone pass; pixel terms keep the image. Call it again to
        replace, or :meth:`clear_target`. Cached tensors follow the prediction to its device.

        Args:
            target: ``(1 or N, 3, H, W)`` in ``input_range``.
            terms: names among :attr:`target_terms`, e.g. ``["style"]`` for a style image.
        """
        terms = list(self.target_terms if terms is None else terms)
        unknown = [t for t in terms if t not in self.target_terms]
        if unknown:
            raise ValueError(
                f"Cannot cache a target for {unknown}: this criterion's target terms are {self.target_terms}."
            )
        if self.channels == "each" or self.slicing is not None:
            raise ValueError(
                "set_target caches one RGB image batch; with channels='each' or slices= pass the target to each call."
            )
        target = check_image(target, "target", self.grayscale).detach()
        check_size(target, "target", self.min_size, "this criterion's layers", self.fixed_size)
        if self.check_inputs:
            check_range(None, target, self.input_range, self._warned)
        for key, members in self._views.items():
            wanted = [m for m in members if m in terms]
            if wanted:
                extractor = self._extractor(key)
                self._cached.update(self._prepare_targets(extractor, wanted, target.to(extractor.scale.dtype)))
        for term in terms:
            if term in self.pixel_weights:
                self._cached[term] = target

    def clear_target(self) -> None:
        """Forget every cached target."""
        self._cached.clear()

    def _cached_for(self, term: str, like: Tensor) -> Any:
        """The cached target of ``term``, moved once to ``like``'s device if the module moved."""
        cached = self._cached[term]
        sample = cached if isinstance(cached, Tensor) else next(iter(cached.values()))
        if sample.device != like.device:
            cached = (
                cached.to(like.device)
                if isinstance(cached, Tensor)
                else {k: v.to(like.device) for k, v in cached.items()}
            )
            self._cached[term] = cached
        return cached

    def _prepare_targets(
        self, extractor: FeatureExtractor, terms: list[str], target: Tensor, mask: Tensor | None = None
    ) -> dict[str, Any]:
        """One target pass (no autograd unless ``target`` requires grad), prepared for each term.

        The raw features go out of scope on return, so taps that no term keeps are freed.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            features = extractor(target)
            masks = None if mask is None else tap_masks(extractor, mask, features, list(features), self.mask_mode)
            return {term: self._comparison(term).prepare_target(features, masks) for term in terms}

    # ------------------------------------------------------------------ forward

    def adversarial_active(self, step: int | None) -> bool:
        """Whether the adversarial term counts at ``step`` (after its warm-up)."""
        return self.adversarial is not None and (step is None or step >= self.adversarial["start_step"])

    def forward(
        self,
        pred: Tensor,
        target: Tensor | None = None,
        *,
        fake_logits: Tensor | None = None,
        real_logits: Tensor | None = None,
        step: int | None = None,
        last_layer: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> LossOutput:
        """Weighted total and detached parts.

        Args:
            pred: ``(N, 3, H, W)`` in ``input_range``, with autograd.
            target: ``(N, 3, H, W)``; may be omitted when every target term is cached.
            fake_logits: the discriminator's logits on ``pred`` (generator side); without them
                the adversarial term is left out.
            real_logits: its logits on real images (``"relativistic"`` only; detach them).
            step: the global step, for the adversarial warm-up (``start_step``).
            last_layer: weight of the generator's last layer, for ``adaptive`` weighting.
            mask: ``(N or 1, 1, H, W)`` weights in ``[0, 1]`` (or bool): every term but the
                adversarial one counts only the region (pixel terms, TV and each backbone
                term, brought to each tap's resolution once per pass). A cached target
                (``set_target``) is used whole.
        """
        if isinstance(pred, Tensor) and pred.dim() == 5:
            total, parts = self._sliced(pred, target, mask)
        else:
            if self.channels == "each":
                pred, target, mask = split_channels(pred, target, mask)
            pred, target = self._check(pred, target)
            mask = check_mask(mask, pred, self.check_inputs, self._warned_mask)
            total, parts = self._weighted(pred, target, mask)
        if self.adversarial is not None and fake_logits is not None and self.adversarial_active(step):
            adversarial = generator_loss(fake_logits, real_logits, self.adversarial["kind"])
            adversarial_weight: Tensor | float = self.adversarial["weight"]
            if self.adversarial["adaptive"] and torch.is_grad_enabled():
                if last_layer is None:
                    raise ValueError(
                        "adaptive adversarial weight needs last_layer=<the generator's last layer weight>."
                    )
                factor = adaptive_weight(total, adversarial, last_layer, self.adversarial["max_weight"])
                adversarial_weight = adversarial_weight * factor
                parts["adversarial_weight"] = factor
            parts["adversarial"] = adversarial.detach()
            total = total + adversarial_weight * adversarial
        elif (
            self.adversarial is not None
            and fake_logits is None
            and torch.is_grad_enabled()
            and not self._warned_adversarial
        ):
            self._warned_adversarial = True
            logger.warning(
                "CombinedLoss has an adversarial term but forward() got no fake_logits: the term is left out."
            )
        return LossOutput(total, parts)

    def _weighted(
        self, pred: Tensor, target: Tensor | None, mask: Tensor | None, pixels: bool = True, features: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weighted total, detached parts)`` of the batch-mean terms (``pixels``: pixel terms;
        ``features``: backbone terms and TV), chunk by chunk with ``chunk_size``."""
        parts: dict[str, Tensor] = {}
        total = pred.new_zeros((), dtype=torch.promote_types(pred.dtype, torch.float32))
        n = pred.shape[0]
        kinds = {"pixels": pixels, "features": features}
        chunk_size = self._chunk_size(pred) if features else self.chunk_size
        if chunk_size is None or n <= chunk_size or not (self._target_terms or self.tv_weight):
            for name, values in self._term_values(pred, target, mask, None, n, **kinds).items():
                value = reduce(values, "mean")
                parts[name] = value.detach()
                total = total + self._weight(name) * value
            return total, parts
        chunks: list[dict[str, Tensor]] = []

        def chunk(samples: slice, p: Tensor, t: Tensor | None) -> Tensor:
            values = self._term_values(p, t, mask, samples, n, **kinds)
            chunks.append({name: v.detach() for name, v in values.items()})
            return torch.stack([self._weight(name) * v for name, v in values.items()]).sum(0)

        total = total + chunked_values(chunk, pred, target, chunk_size).mean()
        return total, {name: torch.cat([c[name] for c in chunks]).mean() for name in chunks[0]}

    def _chunk_size(self, pred: Tensor) -> int | None:
        """``chunk_size``, or what ``max_memory`` allows for every backbone's activations of ``pred``'s
        shape (planned once per shape and dtype; see :mod:`perceptual_loss.budget`)."""
        if self.max_memory is None or not self.extractors or torch.compiler.is_compiling():
            return self.chunk_size
        key = (tuple(pred.shape), pred.dtype)
        if key not in self._plans:
            plan = plan_memory(list(self.extractors.values()), tuple(pred.shape), pred.dtype, self.max_memory)
            if not plan.met:
                logger.warning(
                    "max_memory=%s is below what one sample of %s needs in this criterion's backbones (about %s): "
                    "running one sample at a time.", describe(self.max_memory), tuple(pred.shape[1:]),
                    describe(plan.per_sample),
                )  # fmt: skip
            self._plans[key] = plan.chunk_size
        return self._plans[key]

    def _sliced(self, pred: Tensor, target: Tensor | None, mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """5-D input: pixel terms on the whole tensors, the rest on each dim's slices drawn, summed over dims."""
        if self.slicing is None:
            raise ValueError(
                f"pred has shape {tuple(pred.shape)}: for clips (N, C, T, H, W) or volumes (N, C, D, H, W) build the "
                "criterion with slices={'dims': (2,), 'per_sample': 4} (frames) or slices={'dims': (2, 3, 4)}."
            )
        if target is None or mask is not None:
            raise ValueError("5-D input needs a target and no mask (cached targets and masks are for images).")
        check_volumes(pred, target, "CombinedLoss with slices=")
        n = pred.shape[0]
        total = pred.new_zeros((), dtype=torch.promote_types(pred.dtype, torch.float32))
        parts: dict[str, Tensor] = {}
        if self.check_inputs:  # once, on the whole tensors: the slices are parts of them
            check_range(pred, target, self.input_range, self._warned)
        if self.pixel_weights:
            whole = pred.flatten(1, 2), target.flatten(1, 2)  # (N, C*T, H, W): the same per-sample means
            total, parts = self._weighted(*whole, None, features=False)
        if not (self.comparisons or self.tv_weight):
            return total, parts
        for dim in self.slicing.dims:
            index = self.slicing.draw(n, pred.shape[dim], self.generator, pred.device)
            p, t = take_slices(pred, dim, index), take_slices(target, dim, index)
            if self.channels == "each":
                p, split, _ = split_channels(p, t, None)
                assert split is not None
                t = split
            checked = self._check(p, t, check_values=False)
            dim_total, dim_parts = self._weighted(*checked, None, pixels=False)
            total = total + dim_total
            for name, value in dim_parts.items():
                parts[name] = parts[name] + value if name in parts else value
        return total, parts

    def _weight(self, term: str) -> float:
        if term in self.pixel_weights:
            return self.pixel_weights[term]
        return self.tv_weight if term == "tv" else self.term_weights[term]

    def _term_values(
        self,
        pred: Tensor,
        target: Tensor | None,
        mask: Tensor | None,
        samples: slice | None,
        n: int,
        pixels: bool = True,
        features: bool = True,
    ) -> dict[str, Tensor]:
        """``{term: (len(pred),) unweighted values}`` of every term but the adversarial one
        (``pixels``: the pixel terms; ``features``: backbone terms and TV).

        ``samples``: which of the batch's ``n`` samples ``pred`` and ``target`` are (a chunk); the
        mask and the cached targets with ``n`` samples are cut to them.
        """
        mask = _take(mask, samples, n)
        values: dict[str, Tensor] = {}
        for name in self.pixel_weights if pixels else ():
            reference = _take(self._cached_for(name, pred), samples, n) if name in self._cached else target
            assert reference is not None
            if name == "charbonnier":
                values[name] = charbonnier_distance(pred, reference, self.charbonnier_eps, mask)
            elif name in self._image_options:
                values[name] = image_values(name, self._image_options[name], self.input_range, pred, reference, mask)
            else:
                values[name] = PIXEL_DISTANCES[name](pred, reference, mask)
        if not features:
            return values
        size = (pred.shape[-2], pred.shape[-1])
        for key, members in self._views.items():
            extractor = self._extractor(key)
            prepared = {m: _take(self._cached_for(m, pred), samples, n) for m in members if m in self._cached}
            uncached = [m for m in members if m not in prepared]
            if uncached:  # one target pass for every term of this view, without autograd
                assert target is not None
                same = mask is not None and target.shape[-2:] == pred.shape[-2:]
                prepared.update(self._prepare_targets(extractor, uncached, target, mask if same else None))
            # The target first: its taps that no term kept are freed before pred's forward pass
            # saves its activations.
            pred_features = extractor(pred)
            masks = (
                None if mask is None else tap_masks(extractor, mask, pred_features, list(pred_features), self.mask_mode)
            )
            for member in members:
                values[member] = self._comparison(member)(pred_features, prepared[member], size, masks)
        if self.tv_weight:
            values["tv"] = total_variation(pred, mask)
        return values

    def _check(self, pred: Tensor, target: Tensor | None, check_values: bool = True) -> tuple[Tensor, Tensor | None]:
        """Metadata always; values (the range, one host read) with ``check_inputs`` unless ``check_values=False``."""
        uncached = [t for t in self._target_terms if t not in self._cached]
        if target is None:
            if uncached:
                raise ValueError(f"target is required: the terms {uncached} have no cached target (see set_target).")
            pred = check_image(pred, "pred", self._read_grayscale)
            check_size(pred, "pred", self.min_size, "this criterion's layers", self.fixed_size)
        else:
            pred, target = check_pair(
                pred, target, min_size=self.min_size, layers_note="this criterion's layers",
                grayscale=self._read_grayscale, same_size=self.same_size, fixed_size=self.fixed_size,
            )  # fmt: skip
        if self.extractors:
            check_module_compatible(
                pred, pred if target is None else target, self._extractor(next(iter(self._views))).scale
            )
        if self.check_inputs and check_values:
            check_range(pred, target, self.input_range, self._warned)
        return pred, target

    @property
    def _read_grayscale(self) -> Grayscale:
        """How a channel is read: as gray RGB under ``channels="each"`` (channels are split first)."""
        return "repeat" if self.channels == "each" else self.grayscale

    def _comparison(self, name: str) -> Comparison:
        return cast(Comparison, self.comparisons[name])

    def _extractor(self, key: str) -> FeatureExtractor:
        return cast(FeatureExtractor, self.extractors[key])

    def extra_repr(self) -> str:
        terms = [f"{k}={w:g}" for k, w in self.pixel_weights.items()]
        terms += [f"{k}={w:g}" for k, w in self.term_weights.items()]
        if self.tv_weight:
            terms.append(f"tv={self.tv_weight:g}")
        if self.adversarial:
            terms.append(f"adversarial={self.adversarial}")
        return ", ".join(terms)


def _take(value: Any, samples: slice | None, n: int) -> Any:
    """``value`` (a tensor, a dict of them, or ``None``) cut to ``samples`` where it has ``n`` samples."""
    if samples is None or value is None:
        return value
    if isinstance(value, Tensor):
        return value[samples] if value.shape[0] == n else value
    return {key: _take(v, samples, n) for key, v in value.items()}


def _hashable(weights: WeightsArg) -> Any:
    return str(weights) if isinstance(weights, os.PathLike) else weights
