"""Transformer tokens as feature maps: which tokens a tap keeps, and how they become a map.

A transformer block returns tokens ``(N, L, D)``: a few *prefix* tokens (the class token, a
distillation token, DINOv2's registers) and then one token per image patch, row by row. Every
comparison of this library is written for maps ``(N, C, H, W)``, so a token tap is laid out as

- ``"blocks.11"`` (default): the patch tokens as a map ``(N, D, H / p, W / p)``, prefix tokens
  dropped, where ``p`` is the patch size: the stride of the trunk's patch embedding (its first
  convolution whose kernel equals its stride: timm's ``patch_embed.proj``, open_clip's ``conv1``,
  transformers' ``patch_embedding``, torchvision's ``conv_proj``). The number of prefix tokens
  is what remains, ``L - (H // p) * (W // p)``; it is logged once per tap when the extractor is
  built, and kept in :attr:`FeatureExtractor.token_layouts`;
- ``"blocks.11:cls"``: the first token ``(N, D)`` (CLIP's and DINOv2's class token);
- ``"blocks.11:tokens"``: every token as it is, ``(N, L, D)``.

Tokens stored sequence-first ``(L, N, D)`` (open_clip with ``batch_first=False``) are read as
such. A 3-D output with no patch embedding in the trunk is kept as it is, and said so.
The map is a view of the tokens (no copy), its channels last in memory as the other features' are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import Tensor, nn

logger = logging.getLogger(__name__)

TOKEN_VIEWS = ("map", "cls", "tokens")
"""How a token tap is read: the patch map (no suffix), ``:cls``, ``:tokens``."""


def split_tap(tap: str) -> tuple[str, str]:
    """``"blocks.11:cls"`` -> ``("blocks.11", "cls")``; ``"blocks.11"`` -> ``("blocks.11", "map")``."""
    base, colon, view = tap.rpartition(":")
    if not colon:
        return tap, "map"
    if view not in TOKEN_VIEWS[1:] or not base:
        raise ValueError(
            f"Tap {tap!r}: a suffix after ':' picks how transformer tokens are read, ':cls' (the class token) or "
            f"':tokens' (all of them, (N, L, D)); without one a token tap is the patch map."
        )
    return base, view


def patch_size(module: nn.Module) -> int | None:
    """The stride of ``module``'s patch embedding: its first square ``Conv2d`` with kernel == stride > 1."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d) and sub.kernel_size == sub.stride and sub.stride[0] == sub.stride[1] > 1:
            return int(sub.stride[0])
    return None


@dataclass(frozen=True)
class TokenLayout:
    """How one tap's tokens are read: ``prefix`` tokens, then ``(H // patch) x (W // patch)`` patches."""

    patch: int
    prefix: int

    def patch_map(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """``(N, L, D)`` tokens of an ``height x width`` input -> ``(N, D, H // p, W // p)``."""
        rows, cols = height // self.patch, width // self.patch
        prefix = tokens.shape[1] - rows * cols
        if prefix != self.prefix:
            raise ValueError(
                f"{tokens.shape[1]} tokens for a {height}x{width} input are not {self.prefix} prefix tokens and "
                f"{rows}x{cols} patches of {self.patch} pixels, as when the extractor was built. Tap it with ':tokens' "
                "to compare the tokens as they are."
            )
        return tokens[:, prefix:].transpose(1, 2).unflatten(2, (rows, cols))


def batch_first(tokens: Tensor, batch: int) -> Tensor:
    """``(N, L, D)`` tokens, also from a sequence-first ``(L, N, D)`` tensor."""
    if tokens.shape[0] != batch and tokens.shape[1] == batch:
        return tokens.transpose(0, 1)
    return tokens


def token_layout(trunk: nn.Module, tap: str, shape: tuple[int, ...], size: tuple[int, int]) -> TokenLayout | None:
    """The layout of a 3-D tap of ``shape`` (probed with one image of ``size``), or ``None`` (kept as is)."""
    length, width = (shape[0], shape[2]) if shape[0] != 1 and shape[1] == 1 else (shape[1], shape[2])
    patch = patch_size(trunk)
    if patch is None:
        logger.info("%s gives %d-D output %s and the trunk has no patch embedding: kept as it is", tap, 3, shape)
        return None
    rows, cols = size[0] // patch, size[1] // patch
    prefix = length - rows * cols
    if rows * cols == 0 or not 0 <= prefix < length:
        logger.info(
            "%s: %d tokens are not patches of %d pixels of a %s input: kept as they are", tap, length, patch, size
        )
        return None
    logger.info(
        "%s: %d tokens of %d channels = %d prefix (class token, registers: dropped) + %dx%d patches of %d px -> "
        "a (N, %d, H/%d, W/%d) map",
        tap, length, width, prefix, rows, cols, patch, width, patch, patch,
    )  # fmt: skip
    return TokenLayout(patch, prefix)
