"""The journal of a long evaluation: per-pair results on disk as they are scored, for ``--resume``.

A journal is a folder (by default ``<output>.journal`` beside the output file) holding one JSON
Lines file per process, ``rank<R>.jsonl``: a header line with the run's settings, then one line
per scored pair, ``{"name": ..., "lpips": ..., ...}``, or per failed pair, ``{"name": ...,
"failed": reason}``. Lines are written a batch at a time, flushed and synced, so a run stopped
by Ctrl-C, a kill or a dead node leaves every finished batch behind. Floats are written with
Python's shortest round-trip repr: a resumed run's values are bit for bit the journal's.

The journal is removed once the run completes (and its output, if any, is written).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from .pairing import EvaluationError
from .result import TEXT_KEYS, Row

logger = logging.getLogger(__name__)

FORMAT = "perceptual-loss eval journal 1"
Entry = Row | tuple[str, str]
"""A journal line read back: a scored row, or ``(name, reason)`` for a failed pair."""


def journal_files(folder: Path) -> list[Path]:
    """The per-process files of the journal in ``folder`` (none if it does not exist)."""
    return sorted(folder.glob("rank*.jsonl")) if folder.is_dir() else []


def read_journal(folder: Path, settings: Mapping[str, object]) -> dict[str, Entry]:
    """Every pair recorded in the journal folder, by name.

    A line cut short by a crash (or otherwise unreadable) is skipped with a warning: its pair is
    simply scored again.

    Raises:
        EvaluationError: a file was written with other settings (the differing ones are named),
            or is not a journal.
    """
    entries: dict[str, Entry] = {}
    for path in journal_files(folder):
        with open(path) as handle:
            lines = handle.read().split("\n")
        header = _parse(lines[0]) if lines else None
        if header is None or header.get("format") != FORMAT:
            raise EvaluationError(f"{path} is not a journal of `perceptual-loss eval`; move it away or delete it.")
        _check_settings(path, header.get("settings", {}), settings)
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            record = _parse(line)
            if record is None or "name" not in record:
                logger.warning(
                    "%s:%d is incomplete (a run stopped while writing it); that pair is scored again", path, number
                )
                continue
            name = str(record.pop("name"))
            if "failed" in record:
                entries[name] = (name, str(record["failed"]))
            else:
                entries[name] = {
                    "name": name,
                    **{key: str(value) if key in TEXT_KEYS else float(value) for key, value in record.items()},  # type: ignore[arg-type]
                }
    return entries


def _parse(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_settings(path: Path, found: object, expected: Mapping[str, object]) -> None:
    found = found if isinstance(found, dict) else {}
    # JSON turns tuples into lists: compare what the two would look like on disk.
    expected = json.loads(json.dumps(dict(expected)))
    differing = sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))
    if differing:
        changes = "; ".join(f"{key}: journal {found.get(key)!r}, now {expected.get(key)!r}" for key in differing)
        raise EvaluationError(
            f"The journal {path} was written with other settings ({changes}). Resume with the settings it was "
            "started with, or delete the journal to start over."
        )


class JournalWriter:
    """Appends this process's scored and failed pairs to ``<folder>/rank<R>.jsonl``."""

    def __init__(self, folder: Path, rank: int, settings: Mapping[str, object]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank{rank}.jsonl"
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            _drop_partial_line(self.path)
        self._handle: TextIO = open(self.path, "a")  # noqa: SIM115 - open for the run, closed by close()
        if fresh:
            self._write([{"format": FORMAT, "settings": dict(settings)}])

    def write(self, rows: Iterable[Row], failures: Iterable[tuple[str, str]]) -> None:
        """Record one batch: one write, flushed and synced to disk."""
        self._write([*rows, *({"name": name, "failed": reason} for name, reason in failures)])

    def _write(self, records: list[Mapping[str, object]]) -> None:
        if not records:
            return
        self._handle.write("".join(json.dumps(record, allow_nan=True) + "\n" for record in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _drop_partial_line(path: Path) -> None:
    """Cut a line a crash left unfinished, so the next line starts on a line of its own."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def remove_journal(folder: Path, files: Iterable[Path]) -> None:
    """Delete ``files`` of the journal, then the folder if that left it empty."""
    for path in files:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty (another process's file, or the user's), or already gone
        folder.rmdir()
