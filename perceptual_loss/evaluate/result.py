"""What an evaluation found: rows per pair, failures, unmatched files, a summary; written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

Row = dict[str, str | float]
"""``{"name": relative path, metric: value, ...}`` for one compared pair; a metric that could not
be computed for it is absent, and ``"missing"`` says which and why (``"lpips: too small ..."``);
``"note"`` says what else to know (``"first of 12 frames"``)."""
TEXT_KEYS = ("name", "missing", "note")
"""The keys of a row that hold text, not a metric's value."""


@dataclass
class EvaluationResult:
    """Per-pair rows, a per-metric summary, and everything that was not compared.

    ``rows``: ``{"name": relative path, metric: value, ...}`` per compared pair, in name order.
    ``failures``: ``(name, reason)`` for pairs that could not be compared (unreadable, size), in
    name order. ``ignored_in_first``/``ignored_in_second``: files that are not images. Every file
    of both folders is in exactly one place: a row, a failure, only in one folder, or ignored.
    The summary is always computed from ``rows``: under ``torchrun`` from the merged rows of every
    process, never as a mean of per-process means.
    """

    metrics: tuple[str, ...]
    rows: list[Row]
    failures: list[tuple[str, str]]
    only_in_first: list[str]
    only_in_second: list[str]
    settings: dict[str, object] = field(default_factory=dict)
    ignored_in_first: list[str] = field(default_factory=list)
    ignored_in_second: list[str] = field(default_factory=list)

    @property
    def partial(self) -> list[Row]:
        """The rows that lack a metric (``row["missing"]`` says which and why)."""
        return [row for row in self.rows if "missing" in row]

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {count, mean, std, min, max}}`` over the pairs that have the metric (std: population)."""
        out: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            values = [float(row[metric]) for row in self.rows if metric in row]
            finite = [v for v in values if math.isfinite(v)]
            out[metric] = {
                "count": len(values),
                "mean": statistics.fmean(values) if values else math.nan,
                "std": statistics.pstdev(finite) if len(finite) == len(values) and values else math.nan,
                "min": min(values) if values else math.nan,
                "max": max(values) if values else math.nan,
            }
        return out

    @property
    def ok(self) -> bool:
        """True when every paired file was compared with every metric (unmatched and ignored files
        are judged by the caller)."""
        return not self.failures and not self.partial

    def to_json(self, path: str | Path) -> None:
        """Settings, summary, rows, failures and unmatched files as one JSON file (written atomically)."""
        data = {
            "settings": self.settings,
            "summary": self.summary,
            "rows": self.rows,
            "failures": [{"name": n, "reason": r} for n, r in self.failures],
            "only_in_first": self.only_in_first,
            "only_in_second": self.only_in_second,
            "ignored_in_first": self.ignored_in_first,
            "ignored_in_second": self.ignored_in_second,
        }
        write_atomically(path, json.dumps(data, indent=2, allow_nan=True) + "\n")

    def to_csv(self, path: str | Path) -> None:
        """One row per compared pair; failures and unmatched files as rows with a ``status`` (written atomically)."""
        handle = io.StringIO(newline="")
        writer = csv.writer(handle)
        writer.writerow(["name", *self.metrics, "status"])
        for row in self.rows:
            values = [repr(float(row[m])) if m in row else "" for m in self.metrics]
            status = f"partial: {row['missing']}" if "missing" in row else "ok"
            writer.writerow([row["name"], *values, status if "note" not in row else f"{status} ({row['note']})"])
        for name, reason in self.failures:
            writer.writerow([name, *([""] * len(self.metrics)), f"failed: {reason}"])
        for name in self.only_in_first:
            writer.writerow([name, *([""] * len(self.metrics)), "only in first folder"])
        for name in self.only_in_second:
            writer.writerow([name, *([""] * len(self.metrics)), "only in second folder"])
        for label, names in (("first", self.ignored_in_first), ("second", self.ignored_in_second)):
            for name in names:
                writer.writerow([name, *([""] * len(self.metrics)), f"ignored: not an image ({label} folder)"])
        write_atomically(path, handle.getvalue())

    def save(self, path: str | Path) -> None:
        """:meth:`to_csv` or :meth:`to_json`, by the file's suffix (``.csv`` or ``.json``)."""
        suffix = Path(path).suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"The output must end in .csv or .json; got {path}.")
        (self.to_csv if suffix == ".csv" else self.to_json)(path)

    def table(self) -> str:
        """A human-readable summary table."""
        lines = [f"{'metric':8s} {'count':>6s} {'mean':>10s} {'std':>10s} {'min':>10s} {'max':>10s}"]
        for metric, s in self.summary.items():
            lines.append(
                f"{metric:8s} {s['count']:6d} {s['mean']:10.4f} {s['std']:10.4f} {s['min']:10.4f} {s['max']:10.4f}"
            )
        lines.append(
            f"compared {len(self.rows)} pair(s) ({len(self.partial)} partly); failed {len(self.failures)}; only in "
            f"first folder {len(self.only_in_first)}; only in second folder {len(self.only_in_second)}; not images "
            f"{len(self.ignored_in_first)} + {len(self.ignored_in_second)}"
        )
        return "\n".join(lines)


def write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A reader (or a crash) sees the old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: the rename is atomic
    temporary.unlink(missing_ok=True)  # left by a crash of a process that had this pid
    try:
        with open(temporary, "x", newline="") as handle:  # "x": the umask's permissions, never clobber
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
