"""The package's public face: imports, typing marker, no prints, quiet construction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import perceptual_loss

PACKAGE = Path(perceptual_loss.__file__).parent


def test_public_api() -> None:
    from perceptual_loss import LPIPSLoss, PerceptualLoss, StyleLoss  # the lazy names import

    assert LPIPSLoss.__module__ == "perceptual_loss.losses.lpips" and PerceptualLoss and StyleLoss
    assert sorted(perceptual_loss.__all__) == sorted(set(perceptual_loss.__all__))
    for name in perceptual_loss.__all__:
        assert hasattr(perceptual_loss, name), name
    assert perceptual_loss.__version__.count(".") == 2


def test_typed_marker_ships() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_library_never_prints() -> None:
    """Only the command line prints: its stdout table is its product, and it runs in no training loop."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        calls = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        assert not calls, f"print() in {path} at lines {calls}: use logging"


def test_construction_prints_nothing(torch_home: Path) -> None:
    code = (
        "import perceptual_loss as p; p.PerceptualLoss(); p.StyleLoss(); "
        "p.LPIPSLoss(net='alex'); p.LPIPSLoss(net='squeeze', version='0.0')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"TORCH_HOME": str(torch_home), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.stdout == "" and result.stderr == ""


def test_installed_distribution_matches() -> None:
    from importlib.metadata import version

    assert version("perceptual-loss") == perceptual_loss.__version__
