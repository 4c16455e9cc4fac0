"""The ``perceptual-loss`` command line (also ``python -m perceptual_loss``).

    perceptual-loss eval DIR0 DIR1 [--metrics lpips,psnr,ssim,dists] [--net alex|vgg|squeeze]
        [--version 0.1|0.0] [--batch-size N] [--device cpu|cuda] [--output results.csv|.json]
        [--y-channel] [--crop N] [--resize bicubic] [--strict] [--weights imagenet|PATH]

Exit codes: 0 every paired file was compared (and, with ``--strict``, every file had a partner);
1 some pairs failed (unreadable, size mismatch) or ``--strict`` found unmatched files; 2 the run
could not start (bad arguments, missing or empty folders, missing weights).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from . import __version__
from .evaluate import DEFAULT_METRICS, METRICS, EvaluationError, evaluate_folders, pair_folders
from .weights import InvalidWeightsError, MissingWeightsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptual-loss", description="Perceptual losses and metrics.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser(
        "eval",
        help="LPIPS, PSNR, SSIM and DISTS between two folders of images",
        description="Pair images of DIR0 and DIR1 by relative path and score each pair.",
    )
    ev.add_argument("dir0", type=Path, help="images to score, e.g. model outputs")
    ev.add_argument("dir1", type=Path, help="references, e.g. ground truth")
    ev.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma list from {','.join(METRICS)} (default: {','.join(DEFAULT_METRICS)}; dists needs the [dists] extra)",
    )
    ev.add_argument("--net", default="alex", choices=["alex", "vgg", "squeeze"], help="LPIPS trunk (default: alex)")
    ev.add_argument("--version", dest="lpips_version", default="0.1", choices=["0.1", "0.0"], help="LPIPS version")
    ev.add_argument("--batch-size", type=int, default=8, help="pairs of equal size scored together (default: 8)")
    ev.add_argument("--workers", type=int, help="threads decoding images (default: one per CPU core, at most 8)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    ev.add_argument("--output", type=Path, help="write per-pair rows and the summary to a .csv or .json file")
    ev.add_argument("--y-channel", action="store_true", help="PSNR/SSIM on BT.601 luma (SR convention)")
    ev.add_argument("--crop", type=int, default=0, help="pixels shaved from each border for PSNR/SSIM (SR: the scale)")
    ev.add_argument("--resize", choices=["bicubic"], help="resize DIR1's image to DIR0's size when they differ")
    ev.add_argument("--strict", action="store_true", help="files present in only one folder are an error")
    ev.add_argument("--weights", default="imagenet", help="LPIPS trunk weights: imagenet (default) or a file path")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.output is not None and args.output.suffix.lower() not in (".csv", ".json"):
        print(f"error: --output must end in .csv or .json; got {args.output}", file=sys.stderr)
        return 2
    try:
        pairing = pair_folders(args.dir0, args.dir1)
        if args.strict and (pairing.only_in_first or pairing.only_in_second):
            _print_unmatched(pairing.only_in_first, pairing.only_in_second)
            print("error: --strict: some files have no partner (listed above)", file=sys.stderr)
            return 1
        bar = _progress_bar(len(pairing.both), disable=args.quiet)
        result = evaluate_folders(
            args.dir0, args.dir1, metrics=metrics, net=args.net, version=args.lpips_version, batch_size=args.batch_size,
            device=args.device, y_channel=args.y_channel, crop=args.crop, resize=args.resize, weights=args.weights,
            progress=bar.update if bar is not None else None, workers=args.workers,
        )  # fmt: skip
        if bar is not None:
            bar.close()
    except (EvaluationError, MissingWeightsError, InvalidWeightsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in result.rows:
        print("  ".join([str(row["name"])] + [f"{m}={float(row[m]):.4f}" for m in result.metrics]))
    for name, reason in result.failures:
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    _print_unmatched(result.only_in_first, result.only_in_second)
    print(result.table())
    if args.output is not None:
        (result.to_csv if args.output.suffix.lower() == ".csv" else result.to_json)(args.output)
        print(f"wrote {args.output}")
    return 0 if result.ok else 1


def _print_unmatched(only_first: list[str], only_second: list[str]) -> None:
    for label, names in (("only in DIR0", only_first), ("only in DIR1", only_second)):
        for name in names:
            print(f"{label}: {name}", file=sys.stderr)


def _progress_bar(total: int, disable: bool):  # noqa: ANN202 - tqdm is optional
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with lpips
        return None
    return tqdm(total=total, unit="pair", file=sys.stderr, disable=True if disable else None)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
