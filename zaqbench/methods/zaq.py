"""ZAQ (Liu, Zhang, Wang, CVPR 2021) as a method, with the official loop and the ablations."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from .. import distributed
from ..options import option, option_names, recorded_fields, redefault
from ..zaq.bit_rules import (WBITS_RULES, check_contradictions, check_wbits_rules, cumulative_rule_options, options_at,
                             rule_list)
from ..zaq.engine import ZAQConfig, ZAQTrainer
from .base import Method, MethodOutput, RunContext


@dataclass
class ZAQOptions(ZAQConfig):
    """``methods.zaq``: the loop's knobs (:class:`ZAQConfig`) and the bit-width rules."""

    # resolved per job by ``for_bits``, so a job's hashed options hold what it runs with, never the rules
    wbits_rules: tuple[dict[str, Any], ...] = option(
        (), rule_list, since=2, recorded=False,
        help="options that apply from a weight bit width up, e.g. [dict(min_wbits=6, q_prox_weight=1e-3)]")

    def check_combination(self) -> None:
        super().check_combination()
        rules = check_wbits_rules(self.wbits_rules, set(option_names(self)) - {WBITS_RULES})
        for options in cumulative_rule_options(rules):  # every bit width's options pass the same checks
            replace(self, wbits_rules=(), **options)


class ZAQ(Method):
    """Zero-shot adversarial quantization (Liu, Zhang, Wang, CVPR 2021)."""

    name = "zaq"
    display_order = 50
    Options = ZAQOptions
    #: options this method fixes whatever the config says (an ablation's alpha=0): what it runs with
    #: and what its rows record; the config hash keeps the config's value
    overrides: dict[str, Any] = {}

    def __init__(self, **cfg: Any) -> None:
        super().__init__(**cfg)
        check_contradictions(self.options.wbits_rules, cfg, self.section)

    def check(self) -> None:
        # a global batch the torchrun ranks cannot share fails when the plan is built, before any work
        distributed.local_batch(self.options.batch_size, f"{self.section}.batch_size")

    def for_bits(self, wbits: int, abits: int) -> "ZAQ":
        rules = self.options.wbits_rules
        if not rules:
            return self
        values = {name: getattr(self.options, name) for name in option_names(self.options)}
        return type(self)(**{**values, WBITS_RULES: (), **options_at(rules, wbits)})

    def settings(self) -> dict[str, Any]:
        """As run: an ablation's override (alpha=0, beta=0) is what the row records."""
        return recorded_fields(replace(self.options, **self.overrides))

    def zaq_config(self) -> ZAQConfig:
        """The engine's config: this method's options that are the loop's, with the overrides."""
        values = {name: getattr(self.options, name) for name in option_names(ZAQConfig)}
        return ZAQConfig(**{**values, **self.overrides})

    #: the loop that trains Q, and what the row's ``calib_data`` calls its images
    trainer_class: type[ZAQTrainer] = ZAQTrainer
    calib_data = "zaq-generator"

    def run(self, ctx: RunContext) -> MethodOutput:
        cfg = self.zaq_config()
        qmodel = self.quantize(ctx)
        trainer = self.trainer_class(ctx.adapter, copy.deepcopy(ctx.teacher), qmodel, cfg, ctx.work_dir, ctx.seed,
                                     ctx.progress, ctx.snapshot_iters)
        trained = trainer.run(resume=ctx.resume)
        return MethodOutput(trained, calib_data=self.calib_data, iters=cfg.iters)


@dataclass
class ZAQOfficialOptions(ZAQOptions):
    """``methods.zaq-official``: the official loop's defaults."""

    act_ranges: str = redefault(ZAQOptions, "act_ranges", "every-forward")
    relation_guard: str = redefault(ZAQOptions, "relation_guard", "exact")
    recalibrate_at_end: bool = redefault(ZAQOptions, "recalibrate_at_end", False)


class ZAQOfficial(ZAQ):
    """ZAQ's loop as the official code runs it (with the ``zaq-code`` quantization preset): Q's
    activation ranges widen on every forward of the loop and are never recalibrated, and D_f's
    normalisation is the official one, stopping with a divergence message when all-zero feature
    vectors make its gradient blow up (``relation_guard='safe'`` avoids that). These are defaults:
    a config may still set them. README "The official code, reproduced" lists what remains different."""

    name = "zaq-official"
    display_order = 55
    in_default_grid = False  # run by the paper config (configs/cls/resnet20_cifar10_paper.py)
    Options = ZAQOfficialOptions


class ZAQNoFeature(ZAQ):
    """Ablation: output-level discrepancy only (alpha = 0)."""

    name = "zaq-no-feat"
    display_order = 70
    overrides = {"alpha": 0.0}


class ZAQNoActivation(ZAQ):
    """Ablation: no activation regulariser (beta = 0)."""

    name = "zaq-no-act"
    display_order = 80
    overrides = {"beta": 0.0}
