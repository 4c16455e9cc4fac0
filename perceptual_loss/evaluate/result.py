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
"""``{"name": relative path, metric: value, ...}`` for one compared pair."""


@dataclass
class EvaluationResult:
    """Per-pair rows, a per-metric summary, and everything that was not compared.

    ``rows``: ``{"name": relative path, metric: value, ...}`` per compared pair, in name order.
    ``failures``: ``(name, reason)`` for pairs that could not be compared (unreadable, size), in
    name order. The summary is always computed from ``rows``: under ``torchrun`` from the merged
    rows of every process, never as a mean of per-process means.
    """

    metrics: tuple[str, ...]
    rows: list[Row]
    failures: list[tuple[str, str]]
    only_in_first: list[str]
    only_in_second: list[str]
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {count, mean, std, min, max}}`` over the compared pairs (std: population)."""
        out: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            values = [float(row[metric]) for row in self.rows]
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
        """True when every paired file was compared (unmatched files are judged by the caller)."""
        return not self.failures

    def to_json(self, path: str | Path) -> None:
        """Settings, summary, rows, failures and unmatched files as one JSON file (written atomically)."""
        data = {
            "settings": self.settings,
            "summary": self.summary,
            "rows": self.rows,
            "failures": [{"name": n, "reason": r} for n, r in self.failures],
            "only_in_first": self.only_in_first,
            "only_in_second": self.only_in_second,
        }
        write_atomically(path, json.dumps(data, indent=2, allow_nan=True) + "\n")

    def to_csv(self, path: str | Path) -> None:
        """One row per compared pair; failures and unmatched files as rows with a ``status`` (written atomically)."""
        handle = io.StringIO(newline="")
        writer = csv.writer(handle)
        writer.writerow(["name", *self.metrics, "status"])
        for row in self.rows:
            writer.writerow([row["name"], *(repr(float(row[m])) for m in self.metrics), "ok"])
        for name, reason in self.failures:
            writer.writerow([name, *([""] * len(self.metrics)), f"failed: {reason}"])
        for name in self.only_in_first:
            writer.writerow([name, *([""] * len(self.metrics)), "only in first folder"])
        for name in self.only_in_second:
            writer.writerow([name, *([""] * len(self.metrics)), "only in second folder"])
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
            f"compared {len(self.rows)} pair(s); failed {len(self.failures)}; only in first folder "
            f"{len(self.only_in_first)}; only in second folder {len(self.only_in_second)}"
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
