"""The evaluator over several processes (gloo, no GPU), its journal and ``--resume``.

Processes are real: ``torchrun`` subprocesses for the command line, spawned processes joined
through a file store for the Python API. Every multi-process result is compared with a
single-process run of the same folders, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from perceptual_loss import EvaluationError, evaluate_folders
from perceptual_loss.cli import DEFAULT_METRIC_NAMES, METRIC_NAMES, main
from perceptual_loss.evaluate import DEFAULT_METRICS, METRICS, Shard
from perceptual_loss.evaluate.journal import journal_files
from perceptual_loss.evaluate.result import write_atomically

REPO = Path(__file__).resolve().parents[1]


def make_folders(root: Path, pairs: int, corrupt: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """``out/`` and ``gt/`` with ``pairs`` pairs of two sizes (a subfolder, png and jpg), one
    corrupt output (if ``corrupt``), one size mismatch, and a file on each side without a partner."""
    rng = np.random.default_rng(seed)
    out, gt = root / "out", root / "gt"
    for index in range(pairs):
        name = f"{'sub/' if index % 4 == 3 else ''}im{index:02d}.{'jpg' if index % 5 == 4 else 'png'}"
        size = (48, 40) if index % 3 else (40, 56)
        reference = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        noisy = np.clip(reference.astype(int) + rng.integers(-25, 26, reference.shape), 0, 255).astype(np.uint8)
        if index == pairs - 2:  # a size mismatch: fails without --resize
            noisy = noisy[:-8]
        for folder, image in ((gt, reference), (out, noisy)):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / name)
    if corrupt:
        (out / "im01.png").write_bytes(b"not a png at all")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(out / "only_out.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(gt / "only_gt.png")
    return out, gt


def run_cli(*args: str) -> int:
    return main(["eval", *map(str, args), "--quiet", "--batch-size", "2"])


@contextmanager
def one_thread() -> Iterator[None]:
    """Like the subprocesses here (OMP_NUM_THREADS=1, torchrun's default): a convolution's float
    rounding may depend on how many threads split it, so bit-equal results need equal counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torchrun(processes: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "perceptual_loss", "eval", *map(str, args), "--quiet", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def test_cli_metric_names_are_the_evaluators() -> None:
    assert (METRIC_NAMES, DEFAULT_METRIC_NAMES) == (METRICS, DEFAULT_METRICS)


@pytest.mark.parametrize("count", [7, 8, 10, 11])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_cover_every_item_once_without_padding(world: int, count: int) -> None:
    items = list(range(count))
    shards = [Shard(rank, world).take(items) for rank in range(world)]
    assert sorted(sum(shards, [])) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize(("processes", "pairs", "suffix"), [(2, 7, ".csv"), (3, 8, ".json")])
def test_torchrun_output_equals_a_single_process_byte_for_byte(
    tmp_path: Path, processes: int, pairs: int, suffix: str
) -> None:
    """Odd shards, a corrupt file, a size mismatch and unmatched files spread over the ranks."""
    out, gt = make_folders(tmp_path, pairs)
    single, merged = tmp_path / f"single{suffix}", tmp_path / f"merged{suffix}"
    with one_thread():
        single_code = run_cli(out, gt, "--output", single)
    assert single_code == 1  # the corrupt file and the size mismatch
    done = torchrun(processes, out, gt, "--output", merged)
    assert done.returncode == single_code, done.stderr[-3000:]
    assert merged.read_bytes() == single.read_bytes()
    if suffix == ".csv":
        names = [line.split(",")[0] for line in merged.read_text().splitlines()[1:]]
        assert len(names) == len(set(names)) == pairs + 2  # every pair once, plus the two unmatched
    else:
        data = json.loads(merged.read_text())
        assert len(data["rows"]) == pairs - 2 and len(data["failures"]) == 2
        assert data["summary"]["lpips"]["count"] == pairs - 2
    assert not (tmp_path / f"merged{suffix}.journal").exists()
    # Rank 0 alone reports: the table once, whatever the number of processes.
    assert done.stdout.count("compared ") == 1, done.stdout


# --- the Python API in spawned processes -------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, report: str, scenario: str, kwargs: dict[str, Any]) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    outcome: dict[str, Any]
    started = time.monotonic()
    try:
        if scenario == "dies" and rank == 1:
            kwargs["progress"] = lambda n: os._exit(3)  # a killed process: no exception, no goodbye
        if scenario == "fails_after_one_batch":
            kwargs["progress"] = _fail_after_first_batch
        if scenario == "unreadable" and rank == 1:
            kwargs["first"] = kwargs["first"] + "_missing_on_this_node"
        if scenario == "weights_missing" and rank == 1:
            kwargs["weights"] = kwargs["first"] + "/no_such_weights.pth"
        if scenario == "other_files" and rank == 2:
            kwargs["first"] = kwargs["other"]
        kwargs.pop("other", None)
        result = evaluate_folders(**kwargs)
        outcome = {"rows": result.rows, "failures": result.failures, "seconds": time.monotonic() - started}
    except Exception as error:
        outcome = {"error": f"{type(error).__name__}: {error}", "seconds": time.monotonic() - started}
        outcome["traceback"] = traceback.format_exc()
    Path(report, f"rank{rank}.json").write_text(json.dumps(outcome))


def _fail_after_first_batch(count: int) -> None:
    raise RuntimeError("stopped on purpose after one batch")


def spawn(tmp_path: Path, world: int, scenario: str, **kwargs: Any) -> list[dict[str, Any] | None]:
    report = tmp_path / f"report_{scenario}"
    report.mkdir()
    context = mp.get_context("spawn")
    processes = [
        context.Process(
            target=_worker, args=(rank, world, str(tmp_path / f"init_{scenario}"), str(report), scenario, kwargs)
        )
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
        assert not process.is_alive(), "an evaluator process hangs"
    return [json.loads(p.read_text()) if (p := report / f"rank{rank}.json").exists() else None for rank in range(world)]


def api_kwargs(out: Path, gt: Path, **extra: Any) -> dict[str, Any]:
    return {"first": str(out), "second": str(gt), "batch_size": 2, "metrics": ["lpips", "psnr"], **extra}


def test_processes_return_the_single_process_result(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7)
    with one_thread():
        expected = evaluate_folders(**api_kwargs(out, gt))
    outcomes = spawn(tmp_path, 3, "plain", **api_kwargs(out, gt))
    for outcome in outcomes:
        assert outcome is not None and "error" not in outcome, outcome
        assert outcome["rows"] == expected.rows
        assert [tuple(f) for f in outcome["failures"]] == expected.failures


def test_a_dead_process_makes_the_others_fail_clearly_within_the_timeout(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 8, corrupt=False)
    outcomes = spawn(tmp_path, 2, "dies", **api_kwargs(out, gt, timeout=10, output=str(tmp_path / "r.csv")))
    assert outcomes[1] is None  # it died
    assert outcomes[0] is not None and outcomes[0]["error"].startswith("EvaluationError: rank 0: lost the other")
    assert "--resume" in outcomes[0]["error"]
    assert outcomes[0]["seconds"] < 60
    assert not (tmp_path / "r.csv").exists()
    assert journal_files(tmp_path / "r.csv.journal")  # what rank 0 scored is kept


def test_a_folder_missing_on_one_node_stops_every_process(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7)
    outcomes = spawn(tmp_path, 2, "unreadable", **api_kwargs(out, gt, timeout=30))
    assert outcomes[1] is not None and "does not exist" in outcomes[1]["error"]
    assert outcomes[0] is not None and outcomes[0]["error"].startswith(
        "EvaluationError: rank 1 failed while pairing the folders"
    )
    assert "does not exist" in outcomes[0]["error"]


def test_weights_missing_on_one_node_stop_every_process(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7)
    outcomes = spawn(tmp_path, 2, "weights_missing", **api_kwargs(out, gt, timeout=30, output=str(tmp_path / "r.csv")))
    assert outcomes[1] is not None and "no_such_weights.pth" in outcomes[1]["error"]
    assert outcomes[0] is not None and outcomes[0]["error"].startswith("EvaluationError: rank 1 failed while loading")
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.csv.journal").exists()


def test_processes_that_see_different_files_refuse(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7)
    other = tmp_path / "other"
    other.mkdir()
    for path in out.rglob("*.png"):
        target = other / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    outcomes = spawn(tmp_path, 3, "other_files", **api_kwargs(out, gt, timeout=30, other=str(other)))
    for outcome in outcomes:
        assert outcome is not None and "see different files" in outcome["error"], outcome


def test_a_failed_multi_process_run_resumes_on_one_process(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 11)
    output = tmp_path / "result.json"
    expected = tmp_path / "expected.json"
    with one_thread():
        evaluate_folders(**api_kwargs(out, gt, output=str(expected)))
    outcomes = spawn(tmp_path, 2, "fails_after_one_batch", **api_kwargs(out, gt, timeout=30, output=str(output)))
    for outcome in outcomes:
        assert outcome is not None and "stopped on purpose" in outcome["error"]
    files = journal_files(tmp_path / "result.json.journal")
    assert [path.name for path in files] == ["rank0.jsonl", "rank1.jsonl"]  # one finished batch each
    kept = sum(len(path.read_text().splitlines()) - 1 for path in files)
    assert 2 <= kept <= 4
    scored: list[int] = []
    with one_thread():
        evaluate_folders(**api_kwargs(out, gt, output=str(output), resume=True, progress=scored.append))
    assert sum(scored) == 11 - kept
    assert output.read_bytes() == expected.read_bytes()
    assert not (tmp_path / "result.json.journal").exists()


# --- journal and resume on one process ---------------------------------------------------------


class Stop(BaseException):
    """Stands for Ctrl-C (a BaseException, like KeyboardInterrupt) at a chosen batch."""


def stop_after(batches: int):
    calls = []

    def progress(count: int) -> None:
        calls.append(count)
        if len(calls) == batches:
            raise Stop

    return progress


def test_resume_finishes_an_interrupted_run_with_the_uninterrupted_result(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 11)
    expected, output = tmp_path / "expected.csv", tmp_path / "result.csv"
    evaluate_folders(out, gt, batch_size=2, output=expected)
    with pytest.raises(Stop):
        evaluate_folders(out, gt, batch_size=2, output=output, progress=stop_after(3))
    assert not output.exists()
    (journal,) = journal_files(tmp_path / "result.csv.journal")
    kept = len(journal.read_text().splitlines()) - 1  # three batches (the failed pairs are batches of one)
    assert 3 <= kept <= 6
    with pytest.raises(EvaluationError, match="holds the journal of an unfinished run. Pass --resume"):
        evaluate_folders(out, gt, batch_size=2, output=output)
    scored: list[int] = []
    result = evaluate_folders(out, gt, batch_size=2, output=output, resume=True, progress=scored.append)
    assert sum(scored) == 11 - kept
    assert output.read_bytes() == expected.read_bytes()
    assert len(result.rows) == 9 and len(result.failures) == 2
    assert not (tmp_path / "result.csv.journal").exists()


def test_resume_refuses_other_settings_and_names_them(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7)
    output = tmp_path / "result.csv"
    with pytest.raises(Stop):
        evaluate_folders(out, gt, batch_size=2, output=output, progress=stop_after(1))
    with pytest.raises(EvaluationError, match=r"other settings \(crop_border: journal 0, now 4; y_channel"):
        evaluate_folders(out, gt, batch_size=2, output=output, resume=True, crop=4, y_channel=True)
    with pytest.raises(EvaluationError, match="metrics"):
        evaluate_folders(out, gt, output=output, resume=True, metrics=["psnr"])
    # Batch size and workers may change (another batch size rounds a few values differently).
    expected = evaluate_folders(out, gt, batch_size=2)
    result = evaluate_folders(out, gt, batch_size=3, workers=1, output=output, resume=True)
    assert [row["name"] for row in result.rows] == [row["name"] for row in expected.rows]
    for row, reference in zip(result.rows, expected.rows):
        assert {m: row[m] for m in ("lpips", "psnr", "ssim")} == pytest.approx(
            {m: reference[m] for m in ("lpips", "psnr", "ssim")}, rel=1e-6
        )
    assert result.failures == expected.failures


def test_a_line_cut_by_a_crash_is_scored_again(tmp_path: Path) -> None:
    out, gt = make_folders(tmp_path, 7, corrupt=False)
    output = tmp_path / "result.csv"
    with pytest.raises(Stop):
        evaluate_folders(out, gt, batch_size=2, output=output, progress=stop_after(2))
    (journal,) = journal_files(tmp_path / "result.csv.journal")
    journal.write_bytes(journal.read_bytes()[:-9])  # the last line loses its end
    result = evaluate_folders(out, gt, batch_size=2, output=output, resume=True)
    expected = tmp_path / "expected.csv"
    assert result.rows == evaluate_folders(out, gt, batch_size=2, output=expected).rows
    assert output.read_bytes() == expected.read_bytes(), "the output of the uninterrupted run, byte for byte"


def test_cli_ctrl_c_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from perceptual_loss.evaluate import run

    out, gt = make_folders(tmp_path, 7)
    expected, output = tmp_path / "expected.csv", tmp_path / "result.csv"
    assert run_cli(out, gt, "--output", expected) == 1
    original, calls = run._Scoring.__call__, []

    def interrupted(self, items, failures):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, items, failures)

    monkeypatch.setattr(run._Scoring, "__call__", interrupted)
    assert run_cli(out, gt, "--output", output) == 130
    assert "run the same command with --resume" in capsys.readouterr().err
    monkeypatch.setattr(run._Scoring, "__call__", original)
    assert run_cli(out, gt, "--output", output) == 2  # no silent overwrite of the journal
    assert "holds the journal of an unfinished run" in capsys.readouterr().err
    assert run_cli(out, gt, "--output", output, "--resume") == 1
    assert output.read_bytes() == expected.read_bytes()


def test_a_killed_run_resumes(tmp_path: Path) -> None:
    """SIGKILL (no handler runs) in the middle of a real run; --resume completes it."""
    rng = np.random.default_rng(1)
    out, gt = tmp_path / "out", tmp_path / "gt"
    out.mkdir(), gt.mkdir()
    for index in range(120):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(gt / f"{index:03d}.png")
        Image.fromarray(np.clip(image.astype(int) + 9, 0, 255).astype(np.uint8)).save(out / f"{index:03d}.png")
    output, expected = tmp_path / "result.csv", tmp_path / "expected.csv"
    command = [sys.executable, "-m", "perceptual_loss", "eval", str(out), str(gt), "--quiet", "--batch-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([*command, "--output", str(output)], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    journal = tmp_path / "result.csv.journal" / "rank0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) > 10:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = len(journal.read_text().splitlines()) - 1
    assert 10 <= kept < 120 and not output.exists()
    resumed = subprocess.run([*command, "--output", str(output), "--resume"], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    with one_thread():
        assert main(["eval", str(out), str(gt), "--quiet", "--batch-size", "1", "--output", str(expected)]) == 0
    assert output.read_bytes() == expected.read_bytes()


def test_output_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "result.csv"
    path.write_text("the previous result\n")

    def crash(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, "a new result\n")
    assert path.read_text() == "the previous result\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]  # no temporary file left
    monkeypatch.undo()
    write_atomically(path, "a new result\n")
    assert path.read_text() == "a new result\n"
    plain = tmp_path / "elsewhere" / "plain.csv"
    plain.parent.mkdir()
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # the umask's permissions


def test_resume_without_a_journal_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, gt = make_folders(tmp_path, 7)
    with pytest.raises(EvaluationError, match="resume needs a journal"):
        evaluate_folders(out, gt, resume=True)
    assert run_cli(out, gt, "--resume") == 2
    assert "--resume needs the journal" in capsys.readouterr().err
