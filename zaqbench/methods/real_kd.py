"""``real-kd`` as a method: ZAQ's Q training on real images (the trainer is ``zaqbench.real_kd``)."""
from __future__ import annotations

import copy

from ..real_kd import RealDataTrainer
from .base import MethodOutput, RunContext
from .zaq import ZAQ


class RealKD(ZAQ):
    """Reference row, NOT zero-shot: ZAQ's Q training on real training images (no generator)."""

    name = "real-kd"
    uses_real_data = True
    display_order = 95
    table_note = "(reference, uses real data)"

    def run(self, ctx: RunContext) -> MethodOutput:
        cfg = self.zaq_config()
        qmodel = self.quantize(ctx)
        trainer = RealDataTrainer(ctx.adapter, copy.deepcopy(ctx.teacher), qmodel, cfg, ctx.work_dir, ctx.seed,
                                  ctx.progress, ctx.snapshot_iters)
        trained = trainer.run(resume=ctx.resume)
        return MethodOutput(trained, calib_data="real-train-images", iters=cfg.iters)
