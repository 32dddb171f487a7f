"""The post-training baselines: the full-precision reference, noise calibration and the real-data
calibration reference."""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Iterator

import torch

from .. import distributed
from ..quant import QConfig, calibrate_activations
from ..quant.fake_quant import RANGE_RULES
from ..errors import UserError
from .base import Method, MethodOutput, RunContext, seeded


class FullPrecision(Method):
    """The teacher itself: the reference every row is compared against."""

    name = "fp"
    display_order = 0

    def run(self, ctx: RunContext) -> MethodOutput:
        return MethodOutput(ctx.teacher, calib_data="none", quantized=False)


class NoisePTQ(Method):
    """Data-free post-training quantization: weights min/max, activation ranges from N(0, 1) inputs."""

    name = "ptq"
    display_order = 10
    # a_range: how the calibration batches' ranges combine; '' keeps the config's quant.a_range.
    # 'ema' (an exponential moving average of each batch's min/max) lets the noise baselines take
    # many batches: a running min/max only widens with more Gaussian samples (README).
    options = {"batch_size": 64, "calib_batches": 4, "a_range": ""}

    def __init__(self, **cfg: Any) -> None:
        super().__init__(**cfg)
        if self.cfg.get("a_range") == "":  # added later: at its default it stays out of the hashed cfg
            del self.cfg["a_range"]

    def check_options(self) -> None:
        super().check_options()
        if "a_range" in self.options and self.cfg.get("a_range", "") not in ("", *RANGE_RULES[1:]):
            raise UserError(f"methods.{self.name}.a_range={self.cfg['a_range']!r} is not valid; use "
                            f"{', '.join(repr(r) for r in RANGE_RULES[1:])}, or '' for the config's quant.a_range")
        # under torchrun every rank calibrates on its rows of each batch: fail at plan time
        distributed.local_batch(self.cfg["batch_size"], f"methods.{self.name}.batch_size")

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        """This rank's rows of each calibration batch (the whole batch in one process); under
        torchrun the ranges are reduced over ranks per observation."""
        rng = seeded(ctx.seed, ctx.adapter.device)
        for _ in range(self.cfg["calib_batches"]):
            yield distributed.local_rows(torch.randn(ctx.adapter.input_spec.shape(self.cfg["batch_size"]),
                                                     generator=rng, device=ctx.adapter.device))

    def calibration_batches(self, ctx: RunContext) -> list[torch.Tensor]:
        """``batches(ctx)``, made once per (method, settings, seed) in a run and then reused."""
        if ctx.calib_cache is None:
            return list(self.batches(ctx))
        key = (self.name, repr(sorted(self.settings().items())), ctx.seed)
        if key in ctx.calib_cache:
            if distributed.is_main():
                print(f"[zaqbench] {self.name}: reusing this run's calibration batches (same teacher, settings "
                      "and seed)", file=sys.stderr)
        else:
            ctx.calib_cache[key] = list(self.batches(ctx))
        return ctx.calib_cache[key]

    def qconfig_for(self, qconfig: QConfig) -> QConfig:
        rule = self.cfg.get("a_range", "")
        return replace(qconfig, a_range=rule) if rule else qconfig

    def run(self, ctx: RunContext) -> MethodOutput:
        qmodel = self.quantize(ctx)
        calibrate_activations(qmodel, self.calibration_batches(ctx), ctx.adapter.forward_raw)
        return MethodOutput(qmodel.eval(), calib_data="gaussian-noise")


class RealPTQ(NoisePTQ):
    """Reference row, NOT zero-shot: activation ranges from real training images."""

    name = "real-ptq"
    uses_real_data = True
    display_order = 90
    table_note = "(reference, uses real data)"
    # real images need no averaging over batches; a_range as ptq's ('' keeps the config's quant.a_range)
    options = {"batch_size": 64, "calib_batches": 4, "a_range": ""}

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        for x in ctx.adapter.real_batches(self.cfg["batch_size"], self.cfg["calib_batches"], ctx.seed):
            yield distributed.local_rows(x.to(ctx.adapter.device))

    def run(self, ctx: RunContext) -> MethodOutput:
        out = super().run(ctx)
        return replace(out, calib_data="real-train-images")
