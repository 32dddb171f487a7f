"""ZeroQ (Cai et al., CVPR 2020) as a method: calibration on BN-statistics-distilled inputs."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import torch

from .. import distributed
from ..zeroq import distill_batch
from .base import MethodOutput, RunContext, seeded
from .ptq import NoisePTQ


class ZeroQ(NoisePTQ):
    """ZeroQ: calibrate activation ranges on BN-statistics-distilled inputs; no fine-tuning."""

    name = "zeroq"
    display_order = 30
    options = {"batch_size": 64, "calib_batches": 1, "distill_iters": 500, "lr": 0.5}

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        rng = seeded(ctx.seed, ctx.adapter.device)
        shape = ctx.adapter.input_spec.shape(self.cfg["batch_size"])
        # under torchrun every rank distils its rows of each batch, with the whole batch's BN statistics
        for _ in range(self.cfg["calib_batches"]):
            init = distributed.local_rows(torch.randn(shape, generator=rng, device=ctx.adapter.device))
            yield distill_batch(ctx.adapter, ctx.teacher, self.cfg["batch_size"], self.cfg["distill_iters"],
                                self.cfg["lr"], None, ctx.progress, init=init)[0]

    def run(self, ctx: RunContext) -> MethodOutput:
        out = super().run(ctx)
        # iters: the protocol's distillation budget, also when this run reused the batches
        return replace(out, calib_data="zeroq-distilled", iters=self.cfg["distill_iters"] * self.cfg["calib_batches"])
