"""The demo's ``weights=auto``: ImageNet backbone weights when available, else loudly random.

The library itself is strict (``weights="imagenet"`` raises :class:`perceptual_loss.MissingWeightsError`
offline). The demo must also run offline, so it resolves a *choice*:

- ``auto`` (demo default): ``"imagenet"`` when the files are cached or downloadable; otherwise
  random weights, with a loud warning that also goes into the run's summary and final table
  ("backbone weights: RANDOM (not perceptual)");
- ``imagenet``: strict, raises offline;
- ``none``: random weights (tests, smoke runs);
- a path to a weights file (see the library's README).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from perceptual_loss import MissingWeightsError

logger = logging.getLogger(__name__)

T = TypeVar("T")
WeightsChoice = str | Path | None

RANDOM_NOTE = "RANDOM (not perceptual)"


@dataclass(frozen=True)
class ResolvedWeights:
    """What a weights choice became.

    Attributes:
        arg: what the library got: ``"imagenet"``, a path, or ``None`` (random).
        note: human-readable description for logs, the summary file and the table.
        random: ``True`` when the backbone is randomly initialised (numbers are not perceptual).
        reason: why ``auto`` fell back to random (the library's error message), else ``None``.
    """

    arg: str | None
    note: str
    random: bool
    reason: str | None = None


def _warn_random(what: str, error: Exception) -> None:
    bar = "=" * 78
    logger.warning(
        "%s\nIMAGENET WEIGHTS NOT AVAILABLE for %s: falling back to RANDOM backbone weights.\n"
        "Training still runs, but the perceptual/LPIPS terms and the LPIPS column are NOT perceptual.\n"
        "Fix: put the torchvision ImageNet files in the torch hub cache, or pass the file's path (loss.weights=PATH for SR runs, weights=PATH for style transfer).\n"
        "Cause: %s\n%s",
        bar, what, error, bar,
    )  # fmt: skip


def build_with_weights(
    factory: Callable[[str | None], T], choice: WeightsChoice, what: str
) -> tuple[T, ResolvedWeights]:
    """Call ``factory(weights_arg)`` for a weights ``choice`` (``auto`` | ``imagenet`` | ``none`` | path).

    Args:
        factory: builds the object (a loss, a metric) from a library ``weights=`` argument.
        choice: see the module doc. ``None`` and ``"none"`` mean random.
        what: name for messages, e.g. ``"the loss"``.

    Returns:
        The built object and how its weights were resolved.

    Raises:
        MissingWeightsError / InvalidWeightsError: for ``imagenet`` or a path that does not work
        (``auto`` only falls back on *missing* ImageNet weights, never on a corrupt file).
    """
    text = "none" if choice is None else str(choice)
    if text.lower() in ("none", "null", "random"):
        return factory(None), ResolvedWeights(None, "random (weights=none): mechanics only, not perceptual", True)
    if text == "imagenet":
        return factory("imagenet"), ResolvedWeights("imagenet", "ImageNet (torchvision)", False)
    if text != "auto":
        return factory(text), ResolvedWeights(text, f"file {text}", False)
    try:
        return factory("imagenet"), ResolvedWeights("imagenet", "ImageNet (torchvision, auto)", False)
    except MissingWeightsError as error:
        _warn_random(what, error)
        return factory(None), ResolvedWeights(None, RANDOM_NOTE, True, reason=str(error))
