"""GDFQ (Xu et al., ECCV 2020) as a method; the generator, objective and trainer are in
``zaqbench.zaq.gdfq``."""
from __future__ import annotations

import copy

from .. import distributed
from ..errors import UserError
from ..zaq.gdfq import GDFQConfig, GDFQTrainer, logit_classes
from .base import Method, MethodOutput, RunContext


class GDFQ(Method):
    """GDFQ (Xu et al., ECCV 2020); label-free ``gdfq-bns`` where P has no image-level logits."""

    name = "gdfq"
    display_order = 40
    Options = GDFQConfig

    def check(self) -> None:
        if distributed.env_world_size() > 1:
            # every rank would train on the whole batch and Q's global-batch BN would sum their
            # gradients: refuse rather than run a different method than the row says
            raise UserError("methods.gdfq is not data-parallel; run it in one process (without torchrun)")

    def gdfq_config(self) -> GDFQConfig:
        return self.options

    def run(self, ctx: RunContext) -> MethodOutput:
        cfg = self.gdfq_config()
        num_classes = logit_classes(ctx.adapter, ctx.teacher) if cfg.labels == "auto" else None
        qmodel = self.quantize(ctx)
        trainer = GDFQTrainer(ctx.adapter, copy.deepcopy(ctx.teacher), qmodel, cfg, num_classes, ctx.work_dir,
                              ctx.seed, ctx.progress, ctx.snapshot_iters)
        trained = trainer.run(resume=ctx.resume)
        variant = "gdfq-generator" if num_classes is not None else "gdfq-bns-generator"
        return MethodOutput(trained, calib_data=variant, iters=cfg.iters)
