"""DistributedDataParallel and torch.compile with a loss inside the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from perceptual_loss import DISTSLoss, LPIPSLoss, PerceptualLoss, StyleLoss

CRITERIA = {
    "vgg16": lambda: PerceptualLoss(["relu2_2"], weights=None),
    # traced, with BatchNorm: its statistics are frozen parameters, so nothing is re-broadcast
    "resnet18": lambda: PerceptualLoss(["bn1", "layer1"], backbone="resnet18", weights=None),
}


class Generator(nn.Module):
    def __init__(self, criterion: str = "vgg16") -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.criterion = CRITERIA[criterion]()

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.criterion(torch.sigmoid(self.body(lr)), hr)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str, criterion: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(rank)  # different random backbones per rank: DDP must sync them once at wrap time
    model = nn.parallel.DistributedDataParallel(Generator(criterion))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    broadcasts = []
    original = dist._broadcast_coalesced

    def counting(*args, **kwargs):
        broadcasts.append(1)
        return original(*args, **kwargs)

    dist._broadcast_coalesced = counting
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        loss = model(torch.rand(2, 3, 16, 16, generator=generator), torch.rand(2, 3, 16, 16, generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dist._broadcast_coalesced = original
    module = model.module
    torch.save(
        {
            "trainable": {k: v.detach() for k, v in module.body.state_dict().items()},
            "frozen": [p.detach().clone() for p in module.criterion.extractor.parameters()],
            "broadcasts_during_steps": len(broadcasts),
            "syncs_buffers": model.will_sync_module_buffers(),
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_ddp_two_processes_agree_and_never_rebroadcast_the_backbone(tmp_path: Path, criterion: str) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), criterion), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in r0["trainable"]:
        torch.testing.assert_close(r0["trainable"][key], r1["trainable"][key], rtol=0, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(r0["frozen"], r1["frozen"], strict=True)), "synced once, at wrap time"
    assert r0["broadcasts_during_steps"] == 0 and r1["broadcasts_during_steps"] == 0
    assert not r0["syncs_buffers"]


@pytest.mark.parametrize(
    "make",
    [lambda: PerceptualLoss(["relu1_2", "relu2_2"]), lambda: StyleLoss(["relu1_2"]), lambda: LPIPSLoss(net="squeeze"),
     lambda: DISTSLoss(), lambda: PerceptualLoss(["bn1", "layer2"], backbone="resnet18"),
     lambda: PerceptualLoss(["logits"], backbone="resnet18", resize=48, distance="l2")],
    ids=["perceptual", "style", "lpips", "dists", "resnet18-traced", "resnet18-logits-resize"],
)  # fmt: skip
def test_compiles_without_graph_breaks(make, images) -> None:
    """fullgraph=True fails on any graph break, e.g. from a value-dependent input check."""
    x, y = images
    loss = make()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    pred = x.clone().requires_grad_(True)
    value = compiled(pred, y)
    value.backward()
    torch.testing.assert_close(value, loss(x, y), rtol=1e-5, atol=1e-7)
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
