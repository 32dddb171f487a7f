"""DFQ (Nagel et al., ICCV 2019) as methods: alone with noise-calibrated activations, and as
ZAQ's starting point. The equalization, absorption and correction are in ``zaqbench.dfq``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..dfq import NotApplicable, dfq_quantize
from ..errors import UserError
from ..quant import calibrate_activations
from .base import MethodOutput, RunContext
from .ptq import NoisePTQ
from .zaq import ZAQ

DFQ_OPTIONS = {"eq_iters": 20, "absorb_bias": True, "bias_correction": True}


def _dfq_qmodel(cfg: dict[str, Any], ctx: RunContext) -> nn.Module:
    example = torch.zeros(ctx.adapter.input_spec.shape(2), device=ctx.adapter.device)
    qmodel, _ = dfq_quantize(ctx.teacher, ctx.qconfig, example, cfg["eq_iters"], cfg["absorb_bias"],
                             cfg["bias_correction"], ctx.work_dir)
    return qmodel


def _check_dfq_options(cfg: dict[str, Any], section: str) -> None:
    it = cfg["eq_iters"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 1:
        raise UserError(f"methods.{section}.eq_iters={it!r} is not valid; use a positive integer")
    for key in ("absorb_bias", "bias_correction"):
        if not isinstance(cfg[key], bool):
            raise UserError(f"methods.{section}.{key}={cfg[key]!r} is not valid; use True or False")


class DFQ(NoisePTQ):
    """DFQ, then activation ranges from Gaussian noise exactly as ``ptq`` sets them (DFQ
    has no data; the gap to the ``ptq`` row is what equalization and bias correction buy)."""

    name = "dfq"
    display_order = 20
    options = {**NoisePTQ.options, **DFQ_OPTIONS}

    def check_options(self) -> None:
        _check_dfq_options(self.cfg, self.name)
        super().check_options()

    def quantize(self, ctx: RunContext) -> nn.Module:
        return _dfq_qmodel(self.cfg, ctx)

    def run(self, ctx: RunContext) -> MethodOutput:
        try:
            qmodel = self.quantize(ctx)
        except NotApplicable as err:
            return MethodOutput(ctx.teacher, calib_data="none", not_applicable=str(err))
        calibrate_activations(qmodel, self.calibration_batches(ctx), ctx.adapter.forward_raw)
        return MethodOutput(qmodel.eval(), calib_data="gaussian-noise+dfq")


class DFQThenZAQ(ZAQ):
    """DFQ as pre-processing (equalization, bias absorption and correction), then ZAQ from there."""

    name = "dfq+zaq"
    display_order = 60
    options = {**ZAQ.options, **DFQ_OPTIONS}
    method_only_options = (*ZAQ.method_only_options, *DFQ_OPTIONS)

    def check_options(self) -> None:
        _check_dfq_options(self.cfg, self.name)
        super().check_options()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), **{key: self.cfg[key] for key in DFQ_OPTIONS}}

    def quantize(self, ctx: RunContext) -> nn.Module:
        return _dfq_qmodel(self.cfg, ctx)

    def run(self, ctx: RunContext) -> MethodOutput:
        try:
            out = super().run(ctx)
        except NotApplicable as err:
            return MethodOutput(ctx.teacher, calib_data="none", not_applicable=str(err))
        return MethodOutput(out.model, calib_data="zaq-generator+dfq", iters=out.iters)
