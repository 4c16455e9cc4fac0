"""Score a folder of images against a folder of references: LPIPS, PSNR, SSIM, DISTS.

Files are paired by relative path (recursively). Nothing is dropped silently: files on one side
only, unreadable files and size mismatches are reported per file, and the counts say how many
pairs were actually compared. Pairs of equal size are batched; images are decoded on several
threads while the previous batch is scored; the LPIPS and DISTS models are built once.

Under ``torchrun`` the pairs are split over the processes without padding and the rows merged by
name: the result equals a single process's. A journal beside the output keeps every scored pair,
so a stopped run finishes with ``resume=True`` (``--resume``).

- :mod:`.pairing`: which files pair up; :mod:`.images`: decoding; :mod:`.run`: the pipeline;
- :mod:`.distributed`: the processes' shares and agreement; :mod:`.journal`: the journal;
- :mod:`.result`: rows, summary, CSV/JSON written atomically.
"""

from .distributed import DEFAULT_TIMEOUT, Shard
from .images import MAX_DECODE_WORKERS, default_workers, load_image, read_image, to_unit_batch
from .pairing import IMAGE_SUFFIXES, EvaluationError, Pairing, UnmatchedFilesError, find_images, pair_folders
from .result import EvaluationResult
from .run import DEFAULT_METRICS, METRICS, evaluate_folders

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_TIMEOUT",
    "IMAGE_SUFFIXES",
    "MAX_DECODE_WORKERS",
    "METRICS",
    "EvaluationError",
    "EvaluationResult",
    "Pairing",
    "Shard",
    "UnmatchedFilesError",
    "default_workers",
    "evaluate_folders",
    "find_images",
    "load_image",
    "pair_folders",
    "read_image",
    "to_unit_batch",
]
