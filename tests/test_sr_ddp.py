"""`trainer=ddp`: Lightning DDP on 2 CPU processes (gloo) through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("hydra")
pytest.importorskip("torchmetrics")
pytest.importorskip("skimage")

import torch

from .examples_sr import REPO, TINY


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path: Path) -> None:
    ranks = tmp_path / "ranks"
    command = [
        sys.executable, "-m", "examples.super_resolution.train", "trainer=ddp", "model=espcn", "loss=perceptual",
        "loss.perceptual.layers=[relu1_2]", *TINY, "data.steps_per_epoch=6", "data.val.names=[chelsea,rocket]",
        "+callbacks.ranks._target_=tests.examples_sr.SaveRankWeights", f"+callbacks.ranks.directory={ranks}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = [torch.load(ranks / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [s["world_size"] for s in saved] == [2, 2]
    # 6 batches per epoch split across 2 ranks: 3 optimiser steps each, in lockstep
    assert [s["global_step"] for s in saved] == [3, 3]
    for key, value in saved[0]["network"].items():
        assert torch.equal(value, saved[1]["network"][key]), key
    assert torch.equal(saved[0]["frozen"], saved[1]["frozen"])
    assert not torch.equal(
        saved[0]["network"]["last.weight"], torch.zeros_like(saved[0]["network"]["last.weight"])
    )  # it trained
    assert "model" in done.stdout and (tmp_path / "run" / "summary.txt").is_file()  # rank 0 printed and wrote the table
    assert done.stdout.count("Super-resolution x2") == 1  # only rank 0
