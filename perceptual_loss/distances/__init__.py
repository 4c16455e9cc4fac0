"""How perceptual terms compare: pure functions of feature dicts, no network inside, one module per comparison.

Every loss in the library is "what it looks at" (a :class:`~perceptual_loss.FeatureExtractor`)
plus one of these comparisons, so a criterion that runs a backbone once can hand the same features
to several comparisons. Values that can overflow or lose precision in half precision (Gram
matrices, channel norms, means) are computed in float32 (float64 stays float64), with autocast off.

Shapes: a feature dict is ``{tap: (N, C, H, W)}``; results are ``(N,)`` (one value per sample) or
``(N, 1, H, W)`` for the spatial LPIPS map.

- :mod:`.features`: L1, L2, normalised L2 and Frobenius feature distances and their maps;
- :mod:`.gram`: Gram matrices and the style distance;
- :mod:`.lpips`: LPIPS' layer; :mod:`.dists`: DISTS' moments;
- :mod:`.contextual`: the contextual (and CoBi) loss of unaligned pairs;
- :mod:`.masks`: masks at each tap, mask-weighted means, maps spread over the pixels.
"""

from ._common import DISTANCES, LPIPS_EPS, Distance, normalize_channels
from .contextual import contextual_distance
from .dists import DISTS_C1, DISTS_C2, dists_distance
from .features import feature_distance, feature_distance_map
from .gram import GRAM_DISTANCES, gram_matrices, gram_matrix, style_distance
from .lpips import lpips_distance
from .masks import MASK_EPS, area_upsample, masked_mean, masks_at

__all__ = [
    "DISTANCES",
    "DISTS_C1",
    "DISTS_C2",
    "GRAM_DISTANCES",
    "LPIPS_EPS",
    "MASK_EPS",
    "Distance",
    "area_upsample",
    "contextual_distance",
    "dists_distance",
    "feature_distance",
    "feature_distance_map",
    "gram_matrices",
    "gram_matrix",
    "lpips_distance",
    "masked_mean",
    "masks_at",
    "normalize_channels",
    "style_distance",
]
