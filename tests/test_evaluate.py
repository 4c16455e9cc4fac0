"""The folder evaluator and its command line, on folders built in tmp_path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptual_loss import EvaluationError, evaluate_folders
from perceptual_loss.cli import main
from perceptual_loss.evaluate import load_image, read_image, to_unit_batch
from perceptual_loss.metrics import psnr, rgb_to_y, ssim

from .test_lpips_parity import reference_lpips


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """out/ and gt/ with 5 pairs (two sizes, one in a subfolder, jpg and png) plus extras."""
    rng = np.random.default_rng(0)
    out, gt = tmp_path / "out", tmp_path / "gt"
    for name, size in [
        ("a.png", (48, 40)),
        ("b.png", (48, 40)),
        ("c.png", (64, 64)),
        ("sub/d.png", (48, 40)),
        ("e.jpg", (40, 52)),
    ]:
        reference = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        noisy = np.clip(reference.astype(int) + rng.integers(-20, 21, reference.shape), 0, 255).astype(np.uint8)
        save(gt / name, reference)
        save(out / name, noisy)
    save(out / "only_out.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    save(gt / "only_gt.bmp", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (gt / "notes.txt").write_text("not an image")
    return out, gt


def test_pairs_scores_and_reports_unmatched(folders) -> None:
    out, gt = folders
    result = evaluate_folders(out, gt, batch_size=2)
    assert [row["name"] for row in result.rows] == ["a.png", "b.png", "c.png", "e.jpg", "sub/d.png"]
    assert result.only_in_first == ["only_out.png"] and result.only_in_second == ["only_gt.bmp"]
    assert result.failures == [] and result.ok
    summary = result.summary
    assert summary["lpips"]["count"] == 5 and summary["psnr"]["count"] == 5
    psnrs = [float(r["psnr"]) for r in result.rows]
    assert summary["psnr"]["min"] == min(psnrs) and summary["psnr"]["mean"] == pytest.approx(np.mean(psnrs))
    assert 15 < summary["psnr"]["mean"] < 40 and 0 < summary["ssim"]["mean"] < 1


def test_values_equal_direct_computation_and_lpips_package(folders) -> None:
    out, gt = folders
    result = evaluate_folders(out, gt, net="alex", batch_size=3)
    reference = reference_lpips("alex", "0.1")
    reference.spatial = False
    for row in result.rows:
        a, b = load_image(out / str(row["name"]))[None], load_image(gt / str(row["name"]))[None]
        with torch.no_grad():
            expected = reference(2 * a - 1, 2 * b - 1).item()
        assert float(row["lpips"]) == pytest.approx(expected, abs=1e-5)
        assert float(row["psnr"]) == pytest.approx(psnr(a, b).item(), abs=1e-9)
        assert float(row["ssim"]) == pytest.approx(ssim(a, b).item(), abs=1e-9)


def test_dists_equals_the_reference_per_file(folders) -> None:
    DISTS_pytorch = pytest.importorskip("DISTS_pytorch")
    out, gt = folders
    result = evaluate_folders(out, gt, metrics=["dists", "psnr"], batch_size=3)
    assert result.metrics == ("dists", "psnr") and len(result.rows) == 5
    reference = DISTS_pytorch.DISTS().eval()
    for row in result.rows:
        a, b = load_image(out / str(row["name"]))[None], load_image(gt / str(row["name"]))[None]
        with torch.no_grad():
            expected = reference(a, b).item()
        assert float(row["dists"]) == pytest.approx(expected, abs=1e-5)
    assert main(["eval", str(out), str(gt), "--metrics", "dists", "--quiet"]) == 0


def test_ms_ssim_equals_pytorch_msssim_per_file(tmp_path: Path) -> None:
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    rng = np.random.default_rng(1)
    out, gt = tmp_path / "out", tmp_path / "gt"
    for name, size in [("a.png", (176, 200)), ("b.png", (176, 200)), ("c.png", (192, 170))]:
        reference = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        save(gt / name, reference)
        save(
            out / name, np.clip(reference.astype(int) + rng.integers(-30, 31, reference.shape), 0, 255).astype(np.uint8)
        )
    result = evaluate_folders(out, gt, metrics=["ms_ssim"], batch_size=2)
    assert len(result.rows) == 3 and not result.failures
    for row in result.rows:
        a, b = load_image(out / str(row["name"]))[None], load_image(gt / str(row["name"]))[None]
        expected = pytorch_msssim.ms_ssim(a, b, data_range=1.0).item()
        assert float(row["ms_ssim"]) == pytest.approx(expected, abs=1e-6)
    assert main(["eval", str(out), str(gt), "--metrics", "ms_ssim,psnr", "--quiet"]) == 0


def test_batch_size_does_not_change_results(folders) -> None:
    one = evaluate_folders(*folders, batch_size=1, metrics=["lpips", "ssim"])
    many = evaluate_folders(*folders, batch_size=8, metrics=["lpips", "ssim"])
    for a, b in zip(one.rows, many.rows):
        assert a["name"] == b["name"]
        assert float(a["lpips"]) == pytest.approx(float(b["lpips"]), abs=1e-6)


def test_decoding_threads_do_not_change_results(folders) -> None:
    out, gt = folders
    (out / "b.png").write_bytes(b"\x89PNG broken")
    one = evaluate_folders(out, gt, batch_size=2, workers=1)
    many = evaluate_folders(out, gt, batch_size=2, workers=4)
    assert one.rows == many.rows and len(one.rows) == 4, "same pairs, same values, same order"
    assert one.failures == many.failures and [name for name, _ in many.failures] == ["b.png"]
    with pytest.raises(EvaluationError, match="workers must be >= 1"):
        evaluate_folders(out, gt, workers=0)


def test_ssim_equals_skimage() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    x = torch.rand(2, 3, 40, 37, dtype=torch.float64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    expected = [
        metrics.structural_similarity(x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, channel_axis=0, data_range=1.0)
        for i in range(2)
    ]  # fmt: skip
    torch.testing.assert_close(ssim(x, y), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)


def test_y_channel_and_crop(folders) -> None:
    out, gt = folders
    result = evaluate_folders(out, gt, metrics=["psnr"], y_channel=True, crop=4)
    a, b = load_image(out / "c.png")[None], load_image(gt / "c.png")[None]
    expected = psnr(rgb_to_y(a)[..., 4:-4, 4:-4], rgb_to_y(b)[..., 4:-4, 4:-4]).item()
    assert float(next(r for r in result.rows if r["name"] == "c.png")["psnr"]) == pytest.approx(expected)


def test_corrupt_file_is_reported_and_the_run_continues(folders) -> None:
    out, gt = folders
    (out / "b.png").write_bytes(b"\x89PNG broken")
    result = evaluate_folders(out, gt)
    assert [name for name, _ in result.failures] == ["b.png"]
    assert "cannot read image" in result.failures[0][1] and "b.png" in result.failures[0][1]
    assert len(result.rows) == 4 and not result.ok


def test_size_mismatch_fails_the_pair_or_resizes(folders) -> None:
    out, gt = folders
    save(out / "a.png", np.zeros((24, 20, 3), dtype=np.uint8))
    result = evaluate_folders(out, gt, metrics=["psnr"])
    assert result.failures == [("a.png", "size mismatch: 24x20 vs 48x40 (use --resize bicubic)")]
    resized = evaluate_folders(out, gt, metrics=["psnr"], resize="bicubic")
    assert resized.failures == [] and len(resized.rows) == 5
    a, b = load_image(out / "a.png")[None], load_image(gt / "a.png")[None]
    b = torch.nn.functional.interpolate(b, (24, 20), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert float(resized.rows[0]["psnr"]) == pytest.approx(psnr(a, b).item(), abs=1e-9), "second resized to the first"


def test_image_modes_decode_to_rgb_in_unit_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    deep = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    Image.fromarray(np.dstack([rgb, gray])).save(tmp_path / "rgba.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=7).save(tmp_path / "palette.png")
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "palette.png") as image:
        palette_rgb = np.asarray(image.convert("RGB"))
    expected = {
        "rgba.png": rgb / 255.0,  # alpha dropped
        "gray.png": np.repeat(gray[:, :, None], 3, axis=2) / 255.0,
        "palette.png": palette_rgb / 255.0,
        "deep.png": np.repeat(deep[:, :, None], 3, axis=2) / 65535.0,  # 16 bits kept
    }
    for name, values in expected.items():
        image = load_image(tmp_path / name)
        assert image.shape == (3, 6, 5) and image.dtype == torch.float32, name
        torch.testing.assert_close(image, torch.from_numpy(values).permute(2, 0, 1).float(), rtol=0, atol=1e-7)
    assert read_image(tmp_path / "gray.png").dtype == torch.uint8
    assert read_image(tmp_path / "deep.png").dtype == torch.float32
    # One batch of 8-bit and 16-bit images equals the images converted one by one, exactly.
    batch = to_unit_batch([read_image(tmp_path / name) for name in expected])
    assert batch.shape == (4, 3, 6, 5) and batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack([load_image(tmp_path / name) for name in expected]))


def test_score_joint_equals_two_passes() -> None:
    """The evaluator's one-pass scoring of small images gives forward's values."""
    from perceptual_loss import DISTSLoss, LPIPSLoss, StyleLoss

    torch.manual_seed(0)
    a, b = torch.rand(3, 3, 48, 40), torch.rand(3, 3, 48, 40)
    for loss in (LPIPSLoss(net="squeeze", weights=None, reduction="none"), DISTSLoss(weights=None, reduction="none")):
        torch.testing.assert_close(loss.score_joint(a, b), loss(a, b), rtol=1e-5, atol=1e-7)
        assert loss.score_joint(a, a).abs().max() < 1e-6
        with pytest.raises(ValueError, match="same shape"):
            loss.score_joint(a, b[:2])
    with pytest.raises(ValueError, match="one shape"):  # a style loss takes a target of another size, not here
        StyleLoss(weights=None).score_joint(a, b[:, :, :40])


def test_8_bit_and_16_bit_files_of_one_size_are_scored_together(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for folder in ("out", "gt"):
        save(tmp_path / folder / "rgb.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        save(tmp_path / folder / "deep.png", rng.integers(0, 65536, (32, 32), dtype=np.uint16))
    result = evaluate_folders(tmp_path / "out", tmp_path / "gt", metrics=["psnr", "ssim"], batch_size=4)
    assert result.ok and [row["name"] for row in result.rows] == ["deep.png", "rgb.png"]
    for row in result.rows:
        name = str(row["name"])
        a, b = load_image(tmp_path / "out" / name)[None], load_image(tmp_path / "gt" / name)[None]
        assert float(row["psnr"]) == pytest.approx(psnr(a, b).item(), abs=1e-9)
        assert float(row["ssim"]) == pytest.approx(ssim(a, b).item(), abs=1e-9)


def test_folder_errors(tmp_path: Path, folders) -> None:
    out, _ = folders
    (tmp_path / "empty1").mkdir()
    (tmp_path / "empty2").mkdir()
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate_folders(out, tmp_path / "missing")
    with pytest.raises(EvaluationError, match="same folder"):
        evaluate_folders(out, out)
    with pytest.raises(EvaluationError, match="No images"):
        evaluate_folders(tmp_path / "empty1", tmp_path / "empty2")
    with pytest.raises(EvaluationError, match="Unknown metric"):
        evaluate_folders(out, tmp_path / "empty1", metrics=["fid"])


def test_csv_and_json_round_trip(folders, tmp_path: Path) -> None:
    out, gt = folders
    result = evaluate_folders(out, gt)
    result.to_csv(tmp_path / "r.csv")
    result.to_json(tmp_path / "r.json")
    with open(tmp_path / "r.csv") as handle:
        rows = list(csv.DictReader(handle))
    ok = [r for r in rows if r["status"] == "ok"]
    statuses = {"ok", "only in first folder", "only in second folder", "ignored: not an image (second folder)"}
    assert len(ok) == 5 and {r["status"] for r in rows} == statuses
    for written, original in zip(ok, result.rows):
        assert float(written["lpips"]) == float(original["lpips"]), "repr keeps every digit"
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"] == result.rows and data["only_in_second"] == ["only_gt.bmp"]
    assert data["ignored_in_second"] == ["notes.txt"] and data["ignored_in_first"] == []
    assert data["summary"]["ssim"]["count"] == 5 and data["settings"]["psnr_ssim_data_range"] == 1.0


def test_cli_exit_codes_and_output(folders, tmp_path: Path, capsys) -> None:
    out, gt = folders
    assert main(["eval", str(out), str(gt), "--quiet", "--output", str(tmp_path / "x.json")]) == 0
    captured = capsys.readouterr()
    assert "compared 5 pair(s)" in captured.out and "only in DIR0: only_out.png" in captured.err
    assert (tmp_path / "x.json").is_file()
    assert main(["eval", str(out), str(gt), "--quiet", "--strict"]) == 1
    assert "no partner" in capsys.readouterr().err
    assert main(["eval", str(out), str(tmp_path / "nope"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(out), str(gt), "--output", str(tmp_path / "x.txt")]) == 2
    assert main(["eval", str(out), str(gt), "--quiet", "--workers", "0"]) == 2
    assert "workers must be >= 1" in capsys.readouterr().err
    (out / "a.png").write_bytes(b"junk")
    assert main(["eval", str(out), str(gt), "--quiet", "--metrics", "psnr"]) == 1
    assert "FAILED a.png" in capsys.readouterr().err


def test_python_dash_m_runs_without_traceback(folders, torch_home: Path) -> None:
    out, _ = folders
    result = subprocess.run(
        [sys.executable, "-m", "perceptual_loss", "eval", str(out), str(out)], capture_output=True, text=True,
        env={"TORCH_HOME": str(torch_home), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: Both arguments are the same folder" in result.stderr and "Traceback" not in result.stderr


def test_large_images_are_scored_tile_by_tile_with_the_same_values(tmp_path: Path, monkeypatch) -> None:
    from perceptual_loss.evaluate import run

    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        image = rng.integers(0, 256, (500, 300, 3), dtype=np.uint8)
        save(tmp_path / "out" / name, image)
        save(
            tmp_path / "gt" / name,
            np.clip(image.astype(int) + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8),
        )
    monkeypatch.setattr(run, "TILE", 10_000)
    whole = evaluate_folders(tmp_path / "out", tmp_path / "gt", metrics=["lpips"])
    monkeypatch.setattr(run, "TILE", 224)  # LPIPS-alex's smallest tile: 2 x its 112-pixel halo
    tiled = evaluate_folders(tmp_path / "out", tmp_path / "gt", metrics=["lpips"])
    assert [row["name"] for row in tiled.rows] == [row["name"] for row in whole.rows] == ["a.png", "b.png"]
    for ours, reference in zip(tiled.rows, whole.rows):
        assert ours["lpips"] == pytest.approx(reference["lpips"], rel=1e-5)
