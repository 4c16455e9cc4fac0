"""Trunks torch.fx cannot trace (issue 26): the hook path's early stop, and its cost against the bare module.

What is measured: one training-like step, ``loss(pred, target).backward()`` with ``pred`` a leaf
that requires grad, for ``PerceptualLoss([tap], backbone=module, check_inputs=False)`` on modules
that run through forward hooks (timm's DINOv2 ViT-S/14 with ``dynamic_img_size=True``, a
transformers ``CLIPVisionModel`` with ViT-B/16's config), random weights.

- **early stop**: the tap after block 3 of 12 against the tap after block 12, both through hooks;
  the target is at most 0.45x (the patch embedding and the loss's own work are the rest).
- **hooks / bare**: the loss against the bare module run to the same block by the module's own
  means, written plainly: timm's ``forward_intermediates(x, indices=[k], stop_early=True,
  intermediates_only=True)`` (its patch map of block k), transformers' embeddings, pre-norm and
  ``encoder.layers[:k]`` in a loop, then the patch tokens as a map. Same normalisation, target
  under ``torch.no_grad()``, L1 of that map, backward to pred. The target is at most 1.05x.

Time: interleaved, shuffled round-robin steps (``_common.time_steps``), median of ``--iters`` after
2 warm-up steps. Peak memory: one more step each (``_common.peak_mb``).

Run (about 2 minutes on 2 CPU cores)::

    python bench/bench_trunks.py --iters 7
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from _common import MEASUREMENT_NOTE, Inputs, Step, add_step_arguments, emit_report, peak_mb, step_header, time_steps
from torch import Tensor, nn

from perceptual_loss import PerceptualLoss

CASES = ("dinov2", "hf_clip")


def dinov2() -> tuple[nn.Module, str, Callable[[nn.Module, Tensor, int], Tensor]]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, dynamic_img_size=True).eval()

    def bare(module: nn.Module, x: Tensor, blocks: int) -> Tensor:
        return module.forward_intermediates(x, indices=[blocks - 1], stop_early=True, intermediates_only=True)[0]  # type: ignore[operator]

    return model, "blocks.{}", bare


def hf_clip() -> tuple[nn.Module, str, Callable[[nn.Module, Tensor, int], Tensor]]:
    import transformers

    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(patch_size=16)).eval()

    def bare(module: nn.Module, x: Tensor, blocks: int) -> Tensor:
        hidden = module.pre_layrnorm(module.embeddings(x))  # type: ignore[operator]
        for layer in module.encoder.layers[:blocks]:  # type: ignore[union-attr,index]
            hidden = layer(hidden, None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        side = x.shape[-1] // 16
        return hidden[:, 1:].transpose(1, 2).unflatten(2, (side, side))

    return model, "encoder.layers.{}", bare


def steps_for(case: str, inputs: Inputs) -> dict[str, Step]:
    model, pattern, bare = {"dinov2": dinov2, "hf_clip": hf_clip}[case]()
    model.requires_grad_(False)
    steps: dict[str, Step] = {}
    for blocks in (3, 12):
        loss = PerceptualLoss([pattern.format(blocks - 1)], backbone=model, check_inputs=False)
        scale, shift = loss.extractor.scale, loss.extractor.shift

        def ours(loss: nn.Module = loss) -> None:
            loss(inputs.pred, inputs.target).backward()
            inputs.clear_grads()

        def floor(blocks: int = blocks, scale: Tensor = scale, shift: Tensor = shift) -> None:
            out = bare(model, inputs.pred * scale + shift, blocks)
            with torch.no_grad():
                ref = bare(model, inputs.target * scale + shift, blocks)
            (out - ref).abs().mean().backward()
            inputs.clear_grads()

        steps[f"{case} hooks, block {blocks}"] = ours
        steps[f"{case} bare, block {blocks}"] = floor
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(parser)
    parser.set_defaults(batch=2, size=224, iters=7)
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of: " + ", ".join(CASES))
    parser.add_argument("--out", type=lambda p: __import__("pathlib").Path(p), help="also write the table here")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg()[0]
    inputs = Inputs.random((args.batch, 3, args.size, args.size), device)
    rows = ["| case | ms | peak MB | ratio |", "|---|---:|---:|---|"]
    for case in args.cases.split(","):
        steps = steps_for(case, inputs)
        times = time_steps(steps, args.iters, device)
        memory = peak_mb(steps, device)
        for blocks in (3, 12):
            hooks, bare = f"{case} hooks, block {blocks}", f"{case} bare, block {blocks}"
            rows.append(f"| {bare} | {times[bare]:.1f} | {memory[bare]:.0f} | |")
            rows.append(
                f"| {hooks} | {times[hooks]:.1f} | {memory[hooks]:.0f} | {times[hooks] / times[bare]:.3f}x bare time, "
                f"{memory[hooks] / memory[bare]:.2f}x its memory |"
            )
        early = times[f"{case} hooks, block 3"] / times[f"{case} hooks, block 12"]
        rows.append(f"| {case}: block 3 / block 12 through hooks | | | {early:.3f}x the time |")
    emit_report([step_header(args, device, load), "\n".join(rows), MEASUREMENT_NOTE], [], args.out)


if __name__ == "__main__":
    main()
