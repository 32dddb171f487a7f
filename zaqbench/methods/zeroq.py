"""ZeroQ (Cai et al., CVPR 2020) as a method: calibration on BN-statistics-distilled inputs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch

from .. import distributed
from ..zaq.zeroq import distill_batch
from ..options import Options, option, positive, positive_int
from .base import MethodOutput, RunContext, seeded
from .ptq import NoisePTQ


@dataclass
class ZeroQOptions(Options):
    """``methods.zeroq``: batches of inputs distilled from P's BatchNorm statistics."""

    batch_size: int = option(64, positive_int, help="images per distilled batch")
    calib_batches: int = option(1, positive_int, help="distilled batches")
    distill_iters: int = option(500, positive_int, help="optimisation steps per distilled batch")
    lr: float = option(0.5, positive, help="the distillation's learning rate")


class ZeroQ(NoisePTQ):
    """ZeroQ: calibrate activation ranges on BN-statistics-distilled inputs; no fine-tuning."""

    name = "zeroq"
    display_order = 30
    Options = ZeroQOptions

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        rng = seeded(ctx.seed, ctx.adapter.device)
        shape = ctx.adapter.input_spec.shape(self.options.batch_size)
        # under torchrun every rank distils its rows of each batch, with the whole batch's BN statistics
        for _ in range(self.options.calib_batches):
            init = distributed.local_rows(torch.randn(shape, generator=rng, device=ctx.adapter.device))
            yield distill_batch(ctx.adapter, ctx.teacher, self.options.batch_size, self.options.distill_iters,
                                self.options.lr, None, ctx.progress, init=init)[0]

    def run(self, ctx: RunContext) -> MethodOutput:
        out = super().run(ctx)
        # iters: the distillation option as set (per batch; cfg.calib_batches says how many batches),
        # also when this run reused the batches
        return replace(out, calib_data="zeroq-distilled", iters=self.options.distill_iters)
