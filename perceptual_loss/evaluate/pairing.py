"""Pair the image files of two folders by relative path, the same way on every process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
    """Relative paths found in both folders, and those found in only one (each list sorted)."""

    both: list[str]
    only_in_first: list[str]
    only_in_second: list[str]

    def digest(self) -> str:
        """A short fingerprint of the three lists: processes compare it to know they see the same files."""
        text = "\n".join(["both", *self.both, "first", *self.only_in_first, "second", *self.only_in_second])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_images(folder: Path) -> set[str]:
    """Relative POSIX paths of image files under ``folder`` (recursive, case-insensitive suffixes)."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


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
        a, b = find_images(first), find_images(second)
    except OSError as error:  # e.g. a subfolder without read permission
        raise EvaluationError(f"Cannot list the images of {first} and {second}: {error}") from error
    if not a and not b:
        raise EvaluationError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {first} or {second}.")
    return Pairing(sorted(a & b), sorted(a - b), sorted(b - a))
