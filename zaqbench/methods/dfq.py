"""DFQ (Nagel et al., ICCV 2019) as methods: alone with noise-calibrated activations, and as
ZAQ's starting point. The equalization, absorption and correction are in ``zaqbench.quant.equalization``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..quant.equalization import NotApplicable, dfq_quantize
from ..options import Options, boolean, option, positive_int
from .base import MethodOutput, RunContext
from .ptq import NoisePTQ, PTQOptions
from .zaq import ZAQ, ZAQOptions


@dataclass
class DFQFields(Options):
    """DFQ's own options (Nagel et al.), shared by ``dfq`` and ``dfq+zaq``."""

    eq_iters: int = option(20, positive_int, help="cross-layer equalization sweeps")
    absorb_bias: bool = option(True, boolean, help="absorb high biases into the next layer")
    bias_correction: bool = option(True, boolean, help="correct the quantization's expected output shift")


@dataclass
class DFQOptions(DFQFields, PTQOptions):
    """``methods.dfq``: DFQ, then ``ptq``'s noise calibration."""


@dataclass
class DFQThenZAQOptions(DFQFields, ZAQOptions):
    """``methods.dfq+zaq``: DFQ, then ZAQ's options."""


def _dfq_qmodel(options: DFQFields, ctx: RunContext) -> nn.Module:
    example = torch.zeros(ctx.adapter.input_spec.shape(2), device=ctx.adapter.device)
    qmodel, _ = dfq_quantize(ctx.teacher, ctx.qconfig, example, options.eq_iters, options.absorb_bias,
                             options.bias_correction, ctx.work_dir)
    return qmodel


class DFQ(NoisePTQ):
    """DFQ, then activation ranges from Gaussian noise exactly as ``ptq`` sets them (DFQ
    has no data; the gap to the ``ptq`` row is what equalization and bias correction buy)."""

    name = "dfq"
    display_order = 20
    Options = DFQOptions

    def quantize(self, ctx: RunContext) -> nn.Module:
        return _dfq_qmodel(self.options, ctx)

    def run(self, ctx: RunContext) -> MethodOutput:
        try:
            qmodel = self.quantize(ctx)
        except NotApplicable as err:
            return MethodOutput(ctx.teacher, calib_data="none", not_applicable=str(err))
        return self.calibrate(qmodel, ctx, "gaussian-noise+dfq")


class DFQThenZAQ(ZAQ):
    """DFQ as pre-processing (equalization, bias absorption and correction), then ZAQ from there."""

    name = "dfq+zaq"
    display_order = 60
    Options = DFQThenZAQOptions

    def quantize(self, ctx: RunContext) -> nn.Module:
        return _dfq_qmodel(self.options, ctx)

    def run(self, ctx: RunContext) -> MethodOutput:
        try:
            out = super().run(ctx)
        except NotApplicable as err:
            return MethodOutput(ctx.teacher, calib_data="none", not_applicable=str(err))
        return MethodOutput(out.model, calib_data="zaq-generator+dfq", iters=out.iters)
