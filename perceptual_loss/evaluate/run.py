"""``evaluate_folders``: score each image of one folder against its partner in another.

The pipeline (the same on one process and under ``torchrun``)::

    pair folders by relative path (identical on every process; checked)
    -> read every pair's size (each process reads its share; exchanged) -> batches of one size
    -> batches not in the journal, every world-th to this process (no padding)
    -> decode on threads, batches ahead -> metrics per pair -> journal (a batch at a time)
    -> rows of every process merged by name -> summary from the merged rows -> output, atomically

Batches are formed from the whole pairing before it is split, so each pair is scored in the same
batch whatever the number of processes: the rows are bit for bit those of a single process.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ..metrics import crop_border, psnr, rgb_to_y, ssim
from ..structural import ms_ssim
from ..weights import WeightsArg
from .distributed import Shard
from .images import Loaded, Resize, decode_pair, default_workers, image_size, to_unit_batch
from .journal import Entry, JournalWriter, journal_files, read_journal, remove_journal
from .pairing import EvaluationError, Pairing, UnmatchedFilesError, pair_folders
from .result import EvaluationResult, Row

if TYPE_CHECKING:
    from ..losses import FeatureLoss

logger = logging.getLogger(__name__)

METRICS = ("lpips", "psnr", "ssim", "dists", "ms_ssim")
"""Every metric the evaluator knows. DISTS needs ``pip install 'perceptual-loss[dists]'``."""
DEFAULT_METRICS = ("lpips", "psnr", "ssim")
DECODE_AHEAD = 2
"""Batches decoded ahead of the one being scored: enough to keep every decoding thread busy."""
TILE = 512
"""Images with a side longer than this are scored one pair at a time, LPIPS tile by tile
(:mod:`perceptual_loss.tiles`: every feature equal to the untiled one), so memory stays bounded
for 4K and 8K frames. DISTS cannot be tiled: its memory grows with the image."""
JOINT_PASS_PIXELS = 96 * 96
"""Images of at most this many pixels go through a network together with their references, in
one pass (:meth:`~perceptual_loss.losses.FeatureLoss.score_joint`): a quarter faster at 64 px on
a CPU, where per-call overheads weigh; from 128 px on, two passes are as fast or faster."""


def evaluate_folders(
    first: str | Path,
    second: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    net: Literal["alex", "vgg", "squeeze"] = "alex",
    version: Literal["0.1", "0.0"] = "0.1",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    y_channel: bool = False,
    crop: int = 0,
    resize: Resize = None,
    weights: WeightsArg = "imagenet",
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    output: str | Path | None = None,
    journal: str | Path | None = None,
    resume: bool = False,
    timeout: float | None = None,
    strict: bool = False,
) -> EvaluationResult:
    """Compare each image in ``first`` with the image of the same relative path in ``second``.

    Inside an initialised ``torch.distributed`` process group (e.g. under ``torchrun``) every
    process must call it with the same arguments: each scores its share of the pairs on its own
    device and every process returns the same merged result, equal to a single process's.

    Args:
        first, second: folders, e.g. model outputs and ground truth.
        metrics: any of ``"lpips"``, ``"psnr"``, ``"ssim"``, ``"dists"``, ``"ms_ssim"``
            (``pytorch_msssim.ms_ssim``'s, on the same Y channel and crop as PSNR and SSIM; sides
            over 160 pixels) (default: the first
            three). DISTS equals ``DISTS_pytorch.DISTS`` on the images as they are (no resize).
        net, version, weights: the LPIPS model (see :class:`~perceptual_loss.LPIPSLoss`);
            ``weights`` is a path only for LPIPS: DISTS always reads VGG16's ImageNet file, or
            random weights with ``weights=None``.
        batch_size: pairs of equal size scored together.
        device: where the metrics run. Under torchrun, ``"cuda"`` means each process's own GPU,
            ``cuda:LOCAL_RANK``.
        y_channel: PSNR/SSIM on the BT.601 luma (SR convention) instead of RGB. LPIPS always
            sees RGB.
        crop: pixels shaved from each border before PSNR/SSIM (SR convention: the scale).
        resize: ``None`` (a size mismatch fails that pair) or ``"bicubic"`` (the second image is
            resized to the first's size, antialiased).
        progress: called with the number of pairs this process just finished.
        workers: threads decoding images (``None``: this process's share of the CPU cores, at
            most :data:`~perceptual_loss.evaluate.images.MAX_DECODE_WORKERS`). They decode the
            next batches while one is scored.
        output: a ``.csv`` or ``.json`` file for the result, written atomically (by rank 0).
        journal: a folder where every scored pair is recorded as it is scored (default:
            ``<output>.journal`` when ``output`` is given, otherwise none). It is removed when
            the run completes.
        resume: finish the run recorded in ``journal``: its pairs are not scored again. Its
            settings must equal these (an :class:`EvaluationError` names the differences);
            ``batch_size``, ``device``, ``workers`` and the number of processes may change.
            Without ``resume``, an existing journal is an error (it would be overwritten).
        timeout: seconds a process waits for the others (default 1800) before failing.
        strict: files in only one folder are an error (:class:`UnmatchedFilesError`), raised
            before anything is scored; otherwise they are listed in the result.

    PSNR and SSIM use ``data_range=1`` on images scaled to ``[0, 1]`` (i.e. 255 for 8-bit files).

    Returns:
        :class:`EvaluationResult`.

    Raises:
        EvaluationError: bad arguments, missing, empty or identical folders, a journal that
            exists without ``resume`` or does not fit; under torchrun, any process's failure.
    """
    _check_arguments(metrics, batch_size, workers, output)
    with Shard.open(timeout) as shard:  # its exchange group is released even on an error
        first, second = Path(first), Path(second)
        settings: dict[str, object] = {
            "first": str(first), "second": str(second), "metrics": list(metrics), "lpips_net": net, "lpips_version": version,
            "lpips_weights": str(weights), "psnr_ssim_data_range": 1.0, "y_channel": y_channel, "crop_border": crop,
            "resize": resize,
        }  # fmt: skip
        # The journal records the folders resolved: a resumed run may start from another directory.
        recorded = {**settings, "first": str(first.resolve()), "second": str(second.resolve())}
        journal_folder = (
            Path(journal) if journal is not None else (Path(f"{output}.journal") if output is not None else None)
        )

        # Everything that can fail on one node only (folders, weights, a journal) fails on every node.
        pairing, done, error = None, {}, None
        try:
            pairing = pair_folders(first, second)
            if strict and (pairing.only_in_first or pairing.only_in_second):
                raise UnmatchedFilesError(pairing)
            done = _read_journal(journal_folder, recorded, resume)
        except Exception as caught:
            error = caught
        shard.agree(error, "pairing the folders and reading the journal")
        assert pairing is not None
        _check_same_files(shard, pairing)
        done = _merge_done(shard, done, pairing)

        batches = _batches(shard, pairing.both, first, batch_size)
        todo = [batch for batch in batches if not all(name in done for name in batch)]
        mine = shard.take(todo)
        if done:
            logger.info("resuming: %d of %d pairs are in the journal %s", len(done), len(pairing.both), journal_folder)
        rows: list[Row] = []
        failures: list[tuple[str, str]] = []
        writer = None
        scoring_device = shard.device(torch.device(device))
        workers = workers or default_workers(shard.processes_on_this_machine)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            notes: dict[str, str] = {}
            decoded = _Prefetch(pool, mine, first, second, resize, notes)  # the first batches decode meanwhile
            try:
                networks, error = {}, None
                try:
                    networks = _networks(metrics, net, version, weights, scoring_device)
                except Exception as caught:
                    error = caught
                shard.agree(error, "loading the metrics' weights")
                writer = (
                    JournalWriter(journal_folder, shard.rank, recorded) if journal_folder is not None and mine else None
                )
                scoring = _Scoring(metrics, networks, scoring_device, y_channel, crop, notes)
                error = None
                try:
                    for batch_rows, batch_failures in _score(decoded, scoring):
                        rows += batch_rows
                        failures += batch_failures
                        if writer is not None:
                            writer.write(batch_rows, batch_failures)
                        if progress is not None:
                            progress(len(batch_rows) + len(batch_failures))
                except Exception as caught:
                    error = caught
            finally:  # stopped early (an error, Ctrl-C): drop the decoding that nobody will read
                decoded.cancel()
                if writer is not None:
                    writer.close()
        shard.agree(error, "scoring")

        result = _merge(shard, rows, failures, done, tuple(metrics), pairing, settings)
        error = None
        if output is not None and shard.rank == 0:
            try:
                result.save(output)
            except Exception as caught:
                error = caught
        shard.agree(error, f"writing {output}")
        if journal_folder is not None:
            remove_journal(journal_folder, [*([writer.path] if writer else []), *journal_files(journal_folder)])
        for name, reason in result.failures:
            if shard.rank == 0:
                logger.warning("%s: %s", name, reason)
        return result


def _check_arguments(metrics: Sequence[str], batch_size: int, workers: int | None, output: str | Path | None) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise EvaluationError(f"Unknown metric(s) {unknown}; choose from {METRICS}.")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1; got {batch_size}.")
    if workers is not None and workers < 1:
        raise EvaluationError(f"workers must be >= 1; got {workers}.")
    if output is not None and Path(output).suffix.lower() not in (".csv", ".json"):
        raise EvaluationError(f"The output must end in .csv or .json; got {output}.")


def _read_journal(folder: Path | None, settings: dict[str, object], resume: bool) -> dict[str, Entry]:
    if folder is None:
        if resume:
            raise EvaluationError("resume needs a journal: give output= (its journal is <output>.journal) or journal=.")
        return {}
    if journal_files(folder) and not resume:
        raise EvaluationError(
            f"{folder} holds the journal of an unfinished run. Pass --resume (resume=True) to finish it, or delete "
            "it to start over."
        )
    return read_journal(folder, settings) if resume else {}


def _networks(
    metrics: Sequence[str], net: str, version: str, weights: WeightsArg, device: torch.device
) -> dict[str, FeatureLoss]:
    from ..losses import DISTSLoss, LPIPSLoss

    # check_inputs=False: the images were decoded to [0, 1] here, so the range scan is redundant.
    networks: dict[str, FeatureLoss] = {}
    if "lpips" in metrics:
        networks["lpips"] = LPIPSLoss(
            net=net,  # type: ignore[arg-type]
            version=version,  # type: ignore[arg-type]
            reduction="none",
            weights=weights,
            check_inputs=False,
            tile=TILE,
        )
    if "dists" in metrics:
        networks["dists"] = DISTSLoss(
            reduction="none", weights=None if weights is None else "imagenet", check_inputs=False
        )
    return {name: network.to(device) for name, network in networks.items()}


def _check_same_files(shard: Shard, pairing: Pairing) -> None:
    digests = shard.gather((len(pairing.both), pairing.digest()), "comparing the folders' listings")
    if len(set(digests)) > 1:
        seen = ", ".join(f"rank {rank}: {count} pairs" for rank, (count, _) in enumerate(digests))
        raise EvaluationError(
            f"The processes see different files in the folders ({seen}). On several machines the folders must "
            "hold the same files (a shared file system, or identical copies)."
        )


def _merge_done(shard: Shard, done: dict[str, Entry], pairing: Pairing) -> dict[str, Entry]:
    """The journal entries every process read (on several machines each may see other files)."""
    merged: dict[str, Entry] = {}
    for entries in shard.gather(done, "exchanging the journal"):
        merged.update(entries)
    paired = set(pairing.both)
    return {name: entry for name, entry in merged.items() if name in paired}


def _batches(shard: Shard, names: list[str], first: Path, batch_size: int) -> list[list[str]]:
    """Pairs of one size in batches, the same on every process (each reads a share of the sizes)."""
    sizes: dict[str, tuple[int, int] | None] = {}
    for share in shard.gather({name: image_size(first / name) for name in shard.take(names)}, "exchanging image sizes"):
        sizes.update(share)
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for name in names:
        groups[sizes[name] or (0, 0)].append(name)
    return [group[i : i + batch_size] for _, group in sorted(groups.items()) for i in range(0, len(group), batch_size)]


def _merge(
    shard: Shard,
    rows: list[Row],
    failures: list[tuple[str, str]],
    done: dict[str, Entry],
    metrics: tuple[str, ...],
    pairing: Pairing,
    settings: dict[str, object],
) -> EvaluationResult:
    """Rows and failures of every process and of the journal, by name: the result of a single process."""
    entries: dict[str, Entry] = dict(done)
    for their_rows, their_failures in shard.gather((rows, failures), "merging the rows"):
        entries.update((str(row["name"]), row) for row in their_rows)
        entries.update((name, (name, reason)) for name, reason in their_failures)
    merged_rows = [entry for _, entry in sorted(entries.items()) if isinstance(entry, dict)]
    merged_failures = [entry for _, entry in sorted(entries.items()) if isinstance(entry, tuple)]
    return EvaluationResult(
        metrics, merged_rows, merged_failures, pairing.only_in_first, pairing.only_in_second, settings,
        pairing.ignored_in_first, pairing.ignored_in_second,
    )  # fmt: skip


class _Prefetch:
    """Decodes ``batches`` on ``pool``, :data:`DECODE_AHEAD` batches ahead of the one being read.

    Decoding starts at construction, so the first batches are ready when scoring starts.
    Iterating yields each batch's ``(loaded pairs, failures)`` in order.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        batches: list[list[str]],
        first: Path,
        second: Path,
        resize: Resize,
        notes: dict[str, str],
    ) -> None:
        self.pool, self.batches, self.paths, self.resize, self.notes = pool, batches, (first, second), resize, notes
        self.in_flight: deque[list[Future[Loaded | tuple[str, str]]]] = deque()
        self.submitted = 0
        self._top_up()

    def _top_up(self) -> None:
        while len(self.in_flight) <= DECODE_AHEAD and self.submitted < len(self.batches):
            names = self.batches[self.submitted]
            self.in_flight.append(
                [self.pool.submit(decode_pair, name, *self.paths, self.resize, self.notes) for name in names]
            )
            self.submitted += 1

    def __iter__(self) -> Iterator[tuple[list[Loaded], list[tuple[str, str]]]]:
        while self.in_flight:
            decoded = [future.result() for future in self.in_flight.popleft()]
            self._top_up()
            loaded = [item for item in decoded if not isinstance(item[1], str)]
            yield loaded, [item for item in decoded if isinstance(item[1], str)]  # type: ignore[misc]

    def cancel(self) -> None:
        for futures in self.in_flight:
            for future in futures:
                future.cancel()


def _score(decoded: _Prefetch, scoring: _Scoring) -> Iterator[tuple[list[Row], list[tuple[str, str]]]]:
    """``(rows, failures)`` per batch, in order."""
    for loaded, failures in decoded:
        rows: list[Row] = []
        for size_group in _same_size(loaded):
            rows += scoring(size_group, failures)
        yield rows, failures


def _same_size(loaded: list[Loaded]) -> Iterator[list[Loaded]]:
    by_size: dict[tuple[int, ...], list[Loaded]] = defaultdict(list)
    for item in loaded:
        by_size[tuple(item[1].shape)].append(item)
    yield from by_size.values()


@dataclass
class _Scoring:
    """The metrics of one batch of pairs of one size, on ``device``."""

    metrics: Sequence[str]
    networks: dict[str, FeatureLoss]
    device: torch.device
    y_channel: bool
    crop: int
    notes: dict[str, str] = field(default_factory=dict)
    """Per pair, what else its row should say (filled while decoding: an animation's first frame)."""

    @torch.inference_mode()
    def __call__(self, items: list[Loaded], failures: list[tuple[str, str]]) -> list[Row]:
        names = [name for name, _, _ in items]
        a = to_unit_batch([x for _, x, _ in items], self.device)
        b = to_unit_batch([y for _, _, y in items], self.device)
        joint = a.shape[-2] * a.shape[-1] <= JOINT_PASS_PIXELS
        alone = max(a.shape[-2:]) > TILE  # a large image: one pair at a time
        values: dict[str, list[float]] = {}
        missing: dict[str, str] = {}  # metric -> why it could not be computed for these pairs
        pixels: list[tuple[Tensor, Tensor]] = []  # PSNR's and SSIM's view of the pair, made once
        for metric in self.metrics:
            try:
                values[metric] = self._metric(metric, a, b, joint, alone, pixels).tolist()
            except ValueError as error:  # e.g. smaller than LPIPS', DISTS', SSIM's or MS-SSIM's minimum size
                missing[metric] = str(error)
        if not values:
            reason = "; ".join(f"{metric}: {why}" for metric, why in missing.items())
            failures.extend((name, reason) for name in names)
            return []
        rows: list[Row] = []
        for i, name in enumerate(names):
            row: Row = {"name": name, **{metric: float(v[i]) for metric, v in values.items()}}
            if missing:
                row["missing"] = "; ".join(f"{metric}: {why}" for metric, why in missing.items())
            if name in self.notes:
                row["note"] = self.notes[name]
            rows.append(row)
        return rows

    def _metric(
        self, metric: str, a: Tensor, b: Tensor, joint: bool, alone: bool, pixels: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """One metric of the batch ``(a, b)``, ``(N,)``; ``pixels`` keeps the luma/cropped pair
        the pixel metrics share once it is made."""
        network = self.networks.get(metric)
        if network is not None:
            if joint:
                return network.score_joint(a, b)
            if alone:
                return torch.cat([network(a[i : i + 1], b[i : i + 1]) for i in range(len(a))])
            return network(a, b)
        if not pixels:
            ya, yb = (rgb_to_y(a), rgb_to_y(b)) if self.y_channel else (a, b)
            pixels.append((crop_border(ya, self.crop), crop_border(yb, self.crop)))
        ya, yb = pixels[0]
        if metric == "psnr":
            return psnr(ya, yb)
        if metric == "ssim":
            return ssim(ya, yb)
        return ms_ssim(ya, yb, data_range=1.0)
