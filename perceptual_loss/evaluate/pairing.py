"""Pair the image files of two folders by relative path, the same way on every process."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""The common formats; every other suffix Pillow decodes (GIF, PPM/PGM, JPEG 2000, TGA, ...) counts too."""


@functools.cache
def image_suffixes() -> frozenset[str]:
    """Every suffix Pillow can decode (lower case), with :data:`IMAGE_SUFFIXES`."""
    from PIL import Image

    Image.init()
    return frozenset(IMAGE_SUFFIXES) | {suffix.lower() for suffix in Image.registered_extensions()}


class EvaluationError(ValueError):
    """The folders cannot be evaluated (missing, empty, the same folder, a journal that does not fit, a failed rank)."""


class UnmatchedFilesError(EvaluationError):
    """``strict=True`` and some files have no partner; ``pairing`` lists them."""

    def __init__(self, pairing: Pairing) -> None:
        super().__init__(
            f"{len(pairing.only_in_first)} file(s) only in the first folder and {len(pairing.only_in_second)} only in "
            "the second (strict: every file needs a partner)."
        )
        self.pairing = pairing


@dataclass
class Pairing:
    """Relative paths found in both folders, those found in only one, and the files of each
    folder that are not images (each list sorted): every file is in exactly one list."""

    both: list[str]
    only_in_first: list[str]
    only_in_second: list[str]
    ignored_in_first: list[str] = field(default_factory=list)
    ignored_in_second: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """A short fingerprint of the lists: processes compare it to know they see the same files."""
        text = "\n".join(
            ["both", *self.both, "first", *self.only_in_first, "second", *self.only_in_second,
             "ignored first", *self.ignored_in_first, "ignored second", *self.ignored_in_second]
        )  # fmt: skip
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_files(folder: Path) -> tuple[set[str], set[str]]:
    """``(images, other files)``: relative POSIX paths of every file under ``folder`` (recursive),
    split by whether Pillow decodes their suffix (case-insensitive; see :func:`image_suffixes`)."""
    images: set[str] = set()
    others: set[str] = set()
    suffixes = image_suffixes()
    for path in folder.rglob("*"):
        if path.is_file():
            (images if path.suffix.lower() in suffixes else others).add(path.relative_to(folder).as_posix())
    return images, others


def find_images(folder: Path) -> set[str]:
    """Relative POSIX paths of the image files under ``folder`` (see :func:`find_files`)."""
    return find_files(folder)[0]


def pair_folders(first: str | Path, second: str | Path) -> Pairing:
    """Pair image files of two folders by relative path.

    Raises:
        EvaluationError: a folder is missing or not a folder, both are the same folder, or
            neither holds an image.
    """
    first, second = Path(first), Path(second)
    for folder in (first, second):
        if not folder.exists():
            raise EvaluationError(f"Folder {str(folder)!r} does not exist.")
        if not folder.is_dir():
            raise EvaluationError(f"{str(folder)!r} is not a folder.")
    if first.resolve() == second.resolve():
        raise EvaluationError(f"Both arguments are the same folder ({first}): give the outputs and the references.")
    try:
        (a, other_a), (b, other_b) = find_files(first), find_files(second)
    except OSError as error:  # e.g. a subfolder without read permission
        raise EvaluationError(f"Cannot list the images of {first} and {second}: {error}") from error
    if not a and not b:
        raise EvaluationError(f"No images ({', '.join(IMAGE_SUFFIXES)}, ...) in {first} or {second}.")
    return Pairing(sorted(a & b), sorted(a - b), sorted(b - a), sorted(other_a), sorted(other_b))
