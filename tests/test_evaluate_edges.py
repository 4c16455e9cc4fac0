"""The evaluator at the edges: every file accounted for, any format Pillow reads, partial rows."""

from __future__ import annotations

import csv
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from perceptual_loss import evaluate_folders
from perceptual_loss.cli import main
from perceptual_loss.evaluate.journal import JournalWriter, read_journal


def _image(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        return Image.fromarray((rng.integers(0, 65536, size, dtype=np.uint32)).astype(np.uint16))
    return image.convert(mode)


def _gif(path: Path, size: tuple[int, int], seed: int, frames: int = 3) -> None:
    images = [_image(size, seed + i, "P") for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:])


def accounted(result, folder: Path, side: str) -> list[str]:
    """Every name the result puts this folder's files under, with repeats."""
    only = result.only_in_first if side == "first" else result.only_in_second
    ignored = result.ignored_in_first if side == "first" else result.ignored_in_second
    return [str(r["name"]) for r in result.rows] + [n for n, _ in result.failures] + only + ignored


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_any_format_pillow_reads_is_scored_and_other_files_are_listed(tmp_path: Path) -> None:
    out, gt = tmp_path / "out", tmp_path / "gt"
    for folder, seed in ((out, 0), (gt, 100)):
        _gif(folder / "clip.gif", (40, 48), seed)
        for suffix in (".ppm", ".pgm", ".tga"):
            folder.mkdir(exist_ok=True)
            _image((40, 48), seed + 7, "L" if suffix == ".pgm" else "RGB").save(folder / f"frame{suffix}")
        (folder / "README").write_text("notes")
    (gt / "scores.csv").write_text("a,b\n")
    result = evaluate_folders(out, gt, metrics=["psnr", "ssim"])
    names = {str(r["name"]): r for r in result.rows}
    assert set(names) == {"clip.gif", "frame.ppm", "frame.pgm", "frame.tga"}
    assert names["clip.gif"]["note"] == "first frame of 3 and 3 frames"
    assert result.ignored_in_first == ["README"] and result.ignored_in_second == ["README", "scores.csv"]
    for folder, side in ((out, "first"), (gt, "second")):
        assert sorted(accounted(result, folder, side)) == files(folder)
    assert result.ok


def test_a_metric_that_cannot_be_computed_leaves_a_partial_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, gt = tmp_path / "out", tmp_path / "gt"
    for folder, seed in ((out, 0), (gt, 1)):
        folder.mkdir()
        _image((27, 33), seed).save(folder / "small.png")  # too small for LPIPS-alex
        _image((64, 64), seed).save(folder / "large.png")
    result = evaluate_folders(out, gt, metrics=["lpips", "psnr", "ssim"])
    rows = {str(r["name"]): r for r in result.rows}
    assert not result.failures and set(rows) == {"small.png", "large.png"}
    small = rows["small.png"]
    assert "lpips" not in small and {"psnr", "ssim"} <= set(small) and small["missing"].startswith("lpips: ")
    assert "missing" not in rows["large.png"]
    assert result.summary["lpips"]["count"] == 1 and result.summary["psnr"]["count"] == 2
    assert not result.ok, "a pair without a metric is not a full success"
    result.to_csv(tmp_path / "r.csv")
    with open(tmp_path / "r.csv") as handle:
        written = {row["name"]: row for row in csv.DictReader(handle)}
    assert written["small.png"]["lpips"] == "" and written["small.png"]["status"].startswith("partial: lpips: ")
    assert main(["eval", str(out), str(gt), "--quiet"]) == 1
    assert "PARTLY small.png: lpips: " in capsys.readouterr().err


def test_partial_rows_and_notes_survive_the_journal(tmp_path: Path) -> None:
    settings = {"metrics": ["lpips", "psnr"]}
    writer = JournalWriter(tmp_path, 0, settings)
    row = {"name": "a b/ü.gif", "psnr": 21.5, "missing": "lpips: too small", "note": "first frame of 3 and 3 frames"}
    writer.write([row], [("c.png", "cannot read")])
    writer.close()
    entries = read_journal(tmp_path, settings)
    assert entries == {"a b/ü.gif": row, "c.png": ("c.png", "cannot read")}


NAMES = (
    st.text(alphabet=string.ascii_letters + string.digits + " -_äöéß漢", min_size=1, max_size=8)
    .map(str.strip)
    .filter(bool)
)
KINDS = st.sampled_from(["png", "jpg", "gif", "bmp", "ppm", "tiff", "webp", "txt", "broken", "nosuffix"])
MODES = st.sampled_from(["RGB", "L", "RGBA", "P", "I;16"])
ENTRY = st.tuples(NAMES, st.sampled_from(["", "sub/", "sub/deep/", "ä b/"]), KINDS, MODES,
                  st.integers(1, 24), st.integers(1, 24), st.sampled_from(["both", "first", "second"]))  # fmt: skip


def _write(folder: Path, relative: str, kind: str, mode: str, size: tuple[int, int], seed: int) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("txt", "nosuffix"):
        path.write_text("not an image")
    elif kind == "broken":
        path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    elif kind == "gif":
        _gif(path, size, seed, frames=2)
    else:
        image = _image(size, seed, mode)
        if kind in ("jpg", "ppm", "bmp") and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        if kind == "webp" and image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGB")
        image.save(path)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(ENTRY, min_size=1, max_size=8, unique_by=lambda e: (e[1] + e[0]).lower()))
def test_every_file_of_random_trees_is_accounted_for_once(tmp_path_factory: pytest.TempPathFactory, entries) -> None:
    root = tmp_path_factory.mktemp("tree")
    out, gt = root / "out", root / "gt"
    out.mkdir(), gt.mkdir()
    for index, (name, folder, kind, mode, height, width, where) in enumerate(entries):
        suffix = {"broken": ".png", "nosuffix": ""}.get(kind, f".{kind}")
        relative = f"{folder}{name}{suffix}"
        for side, target in (("first", out), ("second", gt)):
            if where in ("both", side):
                _write(target, relative, kind, mode, (height, width), index + (0 if side == "first" else 1000))
    try:
        result = evaluate_folders(out, gt, metrics=["psnr", "ssim"], batch_size=3)
    except Exception as error:  # only "no images at all" may stop a run
        assert "No images" in str(error), error
        return
    for folder, side in ((out, "first"), (gt, "second")):
        names = accounted(result, folder, side)
        assert sorted(names) == files(folder), "each file in exactly one place"
    assert result.ok == (not result.failures and not result.partial)
