"""ZAQ (Liu, Zhang, Wang, CVPR 2021) as a method, with the official loop and the ablations."""
from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

from .. import distributed
from ..bit_rules import WBITS_RULES, check_wbits_rules, cumulative_rule_options, options_at
from ..engine import ZAQConfig, ZAQTrainer
from .base import Method, MethodOutput, RunContext


class ZAQ(Method):
    """Zero-shot adversarial quantization (Liu, Zhang, Wang, CVPR 2021)."""

    name = "zaq"
    display_order = 50
    # wbits_rules: options that apply from a weight bit width up, e.g. [dict(min_wbits=6,
    # q_prox_weight=1e-3)]; resolved per job by ``for_bits``, so a job's hashed cfg holds the
    # options it runs with and never the rules (bit_rules.py)
    options = {**{f.name: getattr(ZAQConfig(), f.name) for f in fields(ZAQConfig)}, WBITS_RULES: ()}
    protocol_options = tuple(f for f in options if f not in ("checkpoint_interval", WBITS_RULES))  # resuming gives the same Q
    # options of this method that are not the engine's (ZAQConfig) own
    method_only_options: tuple[str, ...] = (WBITS_RULES,)
    overrides: dict[str, Any] = {}

    def __init__(self, **cfg: Any) -> None:
        self.explicit = dict(cfg)  # the config section as given: what a wbits rule must not contradict
        super().__init__(**cfg)
        # options added later (ZAQConfig.LATER_FIELDS, wbits_rules) enter the hashed cfg only when set otherwise
        self.cfg = ZAQConfig.without_later_defaults(self.cfg)
        if not self.cfg[WBITS_RULES]:
            del self.cfg[WBITS_RULES]

    def check_options(self) -> None:
        # impossible values, and a global batch the torchrun ranks cannot share, fail when the
        # plan is built, before any work
        rules = check_wbits_rules(self.cfg.get(WBITS_RULES, ()), self.explicit, self.name,
                                  set(self.options) - {WBITS_RULES})
        cfg = self.zaq_config()  # ZAQConfig checks every option's type and range
        for options in cumulative_rule_options(rules):  # and so at every bit width the rules give
            self.zaq_config({**self.cfg, **options})
        distributed.local_batch(cfg.batch_size, f"methods.{self.name}.batch_size")

    def for_bits(self, wbits: int, abits: int) -> "ZAQ":
        rules = self.cfg.get(WBITS_RULES)
        if not rules:
            return self
        cfg = {key: value for key, value in self.cfg.items() if key != WBITS_RULES}
        return type(self)(**{**cfg, **options_at(rules, wbits)})

    def settings(self) -> dict[str, Any]:
        """As run: an ablation's override (alpha=0, beta=0) is what the row records."""
        cfg = self.zaq_config()
        return ZAQConfig.without_later_defaults({key: getattr(cfg, key) for key in self.protocol_options})

    def zaq_config(self, cfg: dict[str, Any] | None = None) -> ZAQConfig:
        """The engine's config from this method's options (``self.cfg`` unless given)."""
        merged = {**(self.cfg if cfg is None else cfg), **self.overrides}
        return ZAQConfig.from_dict({k: v for k, v in merged.items() if k not in self.method_only_options})

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


class ZAQOfficial(ZAQ):
    """ZAQ's loop as the official code runs it (with the ``zaq-code`` quantization preset): Q's
    activation ranges widen on every forward of the loop and are never recalibrated, and D_f's
    normalisation is the official one, stopping with a divergence message when all-zero feature
    vectors make its gradient blow up (``relation_guard='safe'`` avoids that). These are defaults:
    a config may still set them. README "The official code, reproduced" lists what remains different."""

    name = "zaq-official"
    display_order = 55
    in_default_grid = False  # run by the paper config (configs/cls/resnet20_cifar10_paper.py)
    official = {"act_ranges": "every-forward", "relation_guard": "exact", "recalibrate_at_end": False}
    options = {**ZAQ.options, **official}


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
