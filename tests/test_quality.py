"""Habits of a maintained library, checked with the suite: lint, format, types, and a wheel that installs.

ruff and mypy come with the ``[test]`` extra (their configuration is in pyproject.toml); each
check is skipped, saying so, where its tool is missing.
"""

from __future__ import annotations

import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def require(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[test]')")


def test_ruff_check_passes() -> None:
    require("ruff")
    done = run(sys.executable, "-m", "ruff", "check", ".")
    assert done.returncode == 0, done.stdout[-4000:]


def test_ruff_format_is_applied() -> None:
    require("ruff")
    done = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout[-4000:]


@pytest.mark.slow
def test_mypy_finds_no_errors_in_the_package() -> None:
    require("mypy")
    done = run(sys.executable, "-m", "mypy")  # files and options: [tool.mypy] in pyproject.toml
    assert done.returncode == 0, done.stdout[-4000:]


@pytest.mark.slow
def test_the_built_wheel_installs_in_a_clean_venv_and_works(tmp_path: Path) -> None:
    """Build the wheel, install it (alone) into a new venv, import it from there, call a loss."""
    wheels = tmp_path / "wheels"
    built = run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels))
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = wheels.glob("perceptual_loss-*.whl")
    clean = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(clean)
    python = clean / "bin" / "python"
    target = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    installed = run(sys.executable, "-m", "pip", "install", "--no-deps", "--target", target, str(wheel))
    assert installed.returncode == 0, installed.stderr[-4000:]
    # torch and the other dependencies come from this environment, after the venv's own packages.
    Path(target, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    code = (
        "import perceptual_loss, torch\n"
        f"assert perceptual_loss.__file__.startswith({target!r}), perceptual_loss.__file__\n"
        "loss = perceptual_loss.PerceptualLoss(['relu1_2'], weights=None)\n"
        "value = loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))\n"
        "assert value.item() > 0\n"
        "from perceptual_loss.losses import lpips\n"
        "assert (lpips.__file__ or '').startswith(" + repr(target) + ")\n"
        "print('ok', perceptual_loss.__version__)\n"
    )
    used = run(str(python), "-c", code, cwd=tmp_path)
    assert used.returncode == 0 and used.stdout.startswith("ok "), used.stderr[-4000:]
