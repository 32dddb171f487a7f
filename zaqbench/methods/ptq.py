"""The post-training baselines: the full-precision reference, noise calibration and the real-data
calibration reference."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from typing import Iterator

import torch

from .. import distributed
from ..quant import QConfig, calibrate_activations
from ..quant.fake_quant import RANGE_RULES
from ..options import Options, one_of, option, positive_int
from ..progress import track
from .base import Method, MethodOutput, RunContext, seeded


class FullPrecision(Method):
    """The teacher itself: the reference every row is compared against."""

    name = "fp"
    display_order = 0

    def run(self, ctx: RunContext) -> MethodOutput:
        return MethodOutput(ctx.teacher, calib_data="none", quantized=False)


@dataclass
class PTQOptions(Options):
    """``methods.ptq``: calibration batches of N(0, 1) inputs (``real-ptq``: of real images)."""

    batch_size: int = option(64, positive_int, help="images per calibration batch")
    calib_batches: int = option(4, positive_int, help="calibration batches")
    # 'ema' (an exponential moving average of each batch's min/max) lets the noise baselines take
    # many batches: a running min/max only widens with more Gaussian samples (README)
    a_range: str = option("", one_of(*RANGE_RULES[1:]) | one_of("", text="'' for the config's quant.a_range"),
                          since=2, help="how the calibration batches' ranges combine; '' keeps quant.a_range")


class NoisePTQ(Method):
    """Data-free post-training quantization: weights min/max, activation ranges from N(0, 1) inputs."""

    name = "ptq"
    display_order = 10
    Options = PTQOptions

    def check(self) -> None:
        # under torchrun every rank calibrates on its rows of each batch: fail at plan time
        distributed.local_batch(self.options.batch_size, f"{self.section}.batch_size")

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        """This rank's rows of each calibration batch (the whole batch in one process); under
        torchrun the ranges are reduced over ranks per observation."""
        rng = seeded(ctx.seed, ctx.adapter.device)
        for _ in range(self.options.calib_batches):
            yield distributed.local_rows(torch.randn(ctx.adapter.input_spec.shape(self.options.batch_size),
                                                     generator=rng, device=ctx.adapter.device))

    def make_batches(self, ctx: RunContext) -> tuple[list[torch.Tensor], float]:
        """``batches(ctx)`` as a list, and the seconds making them took."""
        start = time.perf_counter()
        made = list(track(self.batches(ctx), self.options.calib_batches, f"{self.name} calibration data",
                          ctx.progress, ctx.progress_lines))
        return made, time.perf_counter() - start

    def calibration_batches(self, ctx: RunContext) -> tuple[list[torch.Tensor], float, bool]:
        """``batches(ctx)``, made once per (method, settings, seed) in a run and then reused; with
        the seconds making them took and whether this call made them (False: reused)."""
        if ctx.calib_cache is None:
            return (*self.make_batches(ctx), True)
        key = (self.name, repr(sorted(self.settings().items())), ctx.seed)
        made = key not in ctx.calib_cache
        if made:
            ctx.calib_cache[key] = self.make_batches(ctx)
        elif distributed.is_main():
            print(f"[zaqbench] {self.name}: reusing this run's calibration batches (same teacher, settings "
                  "and seed)", file=sys.stderr)
        return (*ctx.calib_cache[key], made)

    def calibrate(self, qmodel: torch.nn.Module, ctx: RunContext, calib_data: str) -> MethodOutput:
        """Set ``qmodel``'s activation ranges on this run's calibration batches; the output records
        the time making the batches took as set-up shared with the run's other bit widths."""
        batches, seconds, made = self.calibration_batches(ctx)
        calibrate_activations(qmodel, track(batches, len(batches), f"{self.name} calibration", ctx.progress,
                                            ctx.progress_lines), ctx.adapter.forward_raw)
        return MethodOutput(qmodel.eval(), calib_data=calib_data, shared_seconds=seconds, shared_made=made)

    def qconfig_for(self, qconfig: QConfig) -> QConfig:
        rule = getattr(self.options, "a_range", "")
        return replace(qconfig, a_range=rule) if rule else qconfig

    def run(self, ctx: RunContext) -> MethodOutput:
        return self.calibrate(self.quantize(ctx), ctx, "gaussian-noise")


class RealPTQ(NoisePTQ):
    """Reference row, NOT zero-shot: activation ranges from real training images."""

    name = "real-ptq"
    uses_real_data = True
    display_order = 90
    table_note = "(reference, uses real data)"

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        for x in ctx.adapter.real_batches(self.options.batch_size, self.options.calib_batches, ctx.seed):
            yield distributed.local_rows(x.to(ctx.adapter.device))

    def run(self, ctx: RunContext) -> MethodOutput:
        out = super().run(ctx)
        return replace(out, calib_data="real-train-images")
