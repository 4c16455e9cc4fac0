"""The ``perceptual-loss`` command line (also ``python -m perceptual_loss``).

    perceptual-loss eval DIR0 DIR1 [--metrics lpips,psnr,ssim,dists,ms_ssim] [--net alex|vgg|squeeze]
        [--version 0.1|0.0] [--batch-size N] [--device cpu|cuda] [--output results.csv|.json]
        [--resume] [--journal DIR] [--y-channel] [--crop N] [--resize bicubic] [--strict]
        [--weights imagenet|PATH] [--timeout SECONDS]

    torchrun --nproc_per_node=N -m perceptual_loss eval DIR0 DIR1 ...   (N processes, one output)

Exit codes: 0 every paired file was compared (and, with ``--strict``, every file had a partner);
1 some pairs failed (unreadable, size mismatch) or ``--strict`` found unmatched files; 2 the run
could not start or a process failed (bad arguments, missing or empty folders, missing weights, a
journal that does not fit); 130 interrupted (the journal keeps what was scored: ``--resume``).

Nothing heavy (torch, torchvision) is imported before the arguments are parsed, so ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__

METRIC_NAMES = ("lpips", "psnr", "ssim", "dists", "ms_ssim")
DEFAULT_METRIC_NAMES = ("lpips", "psnr", "ssim")
# The same tuples as perceptual_loss.evaluate.METRICS / DEFAULT_METRICS (a test checks), kept here
# so that parsing the arguments imports no torch.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-loss", description="Perceptual losses and metrics.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser(
        "eval",
        help="LPIPS, PSNR, SSIM and DISTS between two folders of images",
        description="Pair images of DIR0 and DIR1 by relative path and score each pair. Under torchrun the pairs "
        "are split over the processes and rank 0 writes the one merged output.",
    )
    ev.add_argument("dir0", type=Path, help="images to score, e.g. model outputs")
    ev.add_argument("dir1", type=Path, help="references, e.g. ground truth")
    ev.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRIC_NAMES),
        help=f"comma list from {','.join(METRIC_NAMES)} (default: {','.join(DEFAULT_METRIC_NAMES)}; dists needs the [dists] extra)",
    )
    ev.add_argument("--net", default="alex", choices=["alex", "vgg", "squeeze"], help="LPIPS trunk (default: alex)")
    ev.add_argument("--version", dest="lpips_version", default="0.1", choices=["0.1", "0.0"], help="LPIPS version")
    ev.add_argument("--batch-size", type=int, default=8, help="pairs of equal size scored together (default: 8)")
    ev.add_argument(
        "--workers", type=int, help="threads decoding images (default: this process's share of the cores, at most 8)"
    )
    ev.add_argument(
        "--device", default="cpu", help="cpu, cuda (under torchrun: each process's own GPU), cuda:1, ... (default: cpu)"
    )
    ev.add_argument(
        "--output", type=Path, help="write per-pair rows and the summary to a .csv or .json file (atomically)"
    )
    ev.add_argument(
        "--journal",
        type=Path,
        help="folder recording each scored pair as it is scored (default: OUTPUT.journal with --output)",
    )
    ev.add_argument("--resume", action="store_true", help="finish the run recorded in the journal (same settings)")
    ev.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on BT.601 luma (SR convention)")
    ev.add_argument("--crop", type=int, default=0, help="pixels shaved from each border for PSNR/SSIM (SR: the scale)")
    ev.add_argument("--resize", choices=["bicubic"], help="resize DIR1's image to DIR0's size when they differ")
    ev.add_argument("--strict", action="store_true", help="files present in only one folder are an error")
    ev.add_argument("--weights", default="imagenet", help="LPIPS trunk weights: imagenet (default) or a file path")
    ev.add_argument(
        "--timeout", type=float, default=1800.0, help="under torchrun: seconds to wait for the other processes"
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.output is not None and args.output.suffix.lower() not in (".csv", ".json"):
        return _fail(f"--output must end in .csv or .json; got {args.output}")
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown or not metrics:
        return _fail(f"unknown metric(s) {unknown} in --metrics; choose from {','.join(METRIC_NAMES)}")
    if args.resume and args.output is None and args.journal is None:
        return _fail("--resume needs the journal: give the same --output (or --journal) as the run it finishes")
    with _process_group(args.timeout) as rank:
        return _evaluate(args, metrics, rank)


@contextlib.contextmanager
def _process_group(timeout: float) -> Iterator[int]:
    """This process's rank: under torchrun (``WORLD_SIZE`` > 1) in a gloo group made for the run."""
    from .evaluate.distributed import launched_by_torchrun

    if not launched_by_torchrun():
        yield 0
        return
    from datetime import timedelta

    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    try:
        yield dist.get_rank()
    finally:
        if owned:
            dist.destroy_process_group()


def _evaluate(args: argparse.Namespace, metrics: list[str], rank: int) -> int:
    from .evaluate import EvaluationError, UnmatchedFilesError, evaluate_folders, pair_folders
    from .evaluate.distributed import launched_by_torchrun
    from .weights import InvalidWeightsError, MissingWeightsError

    say = print if rank == 0 else _silent  # every process computes the result; rank 0 reports it
    total = None  # under torchrun rank 0's bar counts its own share: how many, it learns later
    if not launched_by_torchrun():
        with contextlib.suppress(EvaluationError):  # evaluate_folders reports it
            total = len(pair_folders(args.dir0, args.dir1).both)
    try:
        bar = _progress_bar(total, disable=args.quiet or rank != 0)
        result = evaluate_folders(
            args.dir0, args.dir1, metrics=metrics, net=args.net, version=args.lpips_version, batch_size=args.batch_size,
            device=args.device, y_channel=args.y_channel, crop=args.crop, resize=args.resize, weights=args.weights,
            progress=bar.update if bar is not None else None, workers=args.workers, output=args.output,
            journal=args.journal, resume=args.resume, timeout=args.timeout, strict=args.strict,
        )  # fmt: skip
        if bar is not None:
            bar.close()
    except UnmatchedFilesError as error:
        if rank == 0:
            _print_unmatched(error.pairing.only_in_first, error.pairing.only_in_second)
        return _fail("--strict: some files have no partner (listed above)", rank, code=1)
    except (EvaluationError, MissingWeightsError, InvalidWeightsError, ValueError) as error:
        return _fail(str(error), rank)
    except KeyboardInterrupt:
        journal = args.journal or (f"{args.output}.journal" if args.output is not None else None)
        kept = (
            f"; the scored pairs are kept in {journal}: run the same command with --resume to finish" if journal else ""
        )
        return _fail(f"interrupted{kept}", rank, code=130)
    for row in result.rows:
        scores = [f"{m}={float(row[m]):.4f}" for m in result.metrics if m in row]
        say("  ".join([str(row["name"]), *scores, *(f"({row[k]})" for k in ("note", "missing") if k in row)]))
    if rank == 0:
        for name, reason in result.failures:
            print(f"FAILED {name}: {reason}", file=sys.stderr)
        for row in result.partial:
            print(f"PARTLY {row['name']}: {row['missing']}", file=sys.stderr)
        for label, names in (("DIR0", result.ignored_in_first), ("DIR1", result.ignored_in_second)):
            for name in names:
                print(f"not an image in {label}, ignored: {name}", file=sys.stderr)
        _print_unmatched(result.only_in_first, result.only_in_second)
    say(result.table())
    if args.output is not None:
        say(f"wrote {args.output}")
    return 0 if result.ok else 1


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


def _fail(message: str, rank: int | None = None, code: int = 2) -> int:
    prefix = f"[rank {rank}] " if rank else ""
    print(f"{prefix}error: {message}", file=sys.stderr)
    return code


def _print_unmatched(only_first: list[str], only_second: list[str]) -> None:
    for label, names in (("only in DIR0", only_first), ("only in DIR1", only_second)):
        for name in names:
            print(f"{label}: {name}", file=sys.stderr)


def _progress_bar(total: int | None, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lpips
        return None
    return tqdm(total=total, unit="pair", file=sys.stderr, disable=True if disable else None)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
