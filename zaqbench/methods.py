"""Quantization methods compared side by side; each is registered in ``METHODS``.

Every method receives the same :class:`RunContext` (adapter, teacher P,
quantization config, seed, work dir) and returns the model to evaluate plus
the calibration source that goes into the result row's protocol.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import distributed
from .adapter import TaskAdapter
from .bit_rules import WBITS_RULES, check_wbits_rules, cumulative_rule_options, options_at
from .engine import ZAQConfig, ZAQTrainer
from .errors import UserError
from .quant import QConfig, calibrate_activations, quantize_model
from .quant.fake_quant import RANGE_RULES
from .registry import METHODS, UNLISTED_ORDER
from .zeroq import distill_batch


@dataclass
class RunContext:
    adapter: TaskAdapter
    teacher: nn.Module  # P, frozen
    qconfig: QConfig
    seed: int
    work_dir: Path  # this (method, bits, seed) run's own folder
    resume: bool = False
    progress: bool = True
    snapshot_iters: tuple[int, ...] = ()  # ZAQ: save the returned model at these iterations (curves)
    # The run's generator-free calibration batches (noise, real images, ZeroQ's distilled data),
    # shared by its jobs: they depend on the teacher, the method's settings and the seed, not on the
    # bit width, so ``--bits 8,6,4`` makes them once. None: no sharing.
    calib_cache: dict[tuple[str, str, int], list[torch.Tensor]] | None = None


@dataclass
class MethodOutput:
    model: nn.Module
    calib_data: str  # recorded in the row's protocol
    iters: int = 0  # optimisation iterations (ZAQ loop, ZeroQ distillation)
    quantized: bool = True
    not_applicable: str | None = None  # why the method cannot apply to this model: an n/a row, no score


class Method:
    """Base: ``cfg`` holds the method's config section (unknown keys are errors)."""

    options: dict[str, Any] = {}
    # The options that can change a result, recorded in every row (``extra_metrics``, as
    # ``cfg.<option>=<value>``) so that rows of one method with other settings can be told apart.
    # None: all of them. Book-keeping options (checkpoint intervals, logging) are left out.
    protocol_options: tuple[str, ...] | None = None
    # the method trains or calibrates on real training images (a reference row, not data-free):
    # the plan checks that the task has them before any work
    uses_real_data: bool = False

    def __init__(self, **cfg: Any) -> None:
        unknown = sorted(set(cfg) - set(self.options))
        if unknown:
            raise UserError(f"unknown option(s) {unknown} for method '{self.name}'; "
                            f"valid options: {sorted(self.options)}")
        self.cfg = {**self.options, **cfg}
        self.check_options()

    def check_options(self) -> None:
        """Each option has the type of its default: an int default means a positive integer
        (batch sizes, batch and iteration counts), a float default a finite number > 0 (rates).
        Subclasses with other kinds of options override this."""
        for key, default in self.options.items():
            value = self.cfg[key]
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                continue
            if isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise UserError(f"methods.{self.name}.{key}={value!r} is not valid; use a positive integer")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise UserError(f"methods.{self.name}.{key}={value!r} is not valid; use a finite number > 0")

    name = "method"
    #: where the method's rows sit in a result table (lower first; gaps leave room for new methods)
    display_order: int = UNLISTED_ORDER
    #: said after the method's name in a table, e.g. that a row is a real-data reference
    table_note: str = ""
    #: whether the standard grid (tools/regenerate.py without --methods) runs the method
    in_default_grid: bool = True

    def settings(self) -> dict[str, Any]:
        """The protocol options with the values this method runs with."""
        names = self.options if self.protocol_options is None else self.protocol_options
        return {key: self.cfg[key] for key in names if key in self.cfg}  # later options at default: absent

    def run(self, ctx: RunContext) -> MethodOutput:
        raise NotImplementedError

    def for_bits(self, wbits: int, abits: int) -> "Method":
        """This method as it runs at these bit widths (a method whose options depend on the bit
        width returns a copy with them resolved; its ``cfg`` is what the job's hash takes)."""
        return self

    def qconfig_for(self, qconfig: QConfig) -> QConfig:
        """The quantization protocol this method runs with: the config's, unless a method option
        changes part of it (the row's protocol columns are taken from what this returns)."""
        return qconfig

    def quantize(self, ctx: RunContext) -> nn.Module:
        example = torch.zeros(ctx.adapter.input_spec.shape(2), device=ctx.adapter.device)
        qmodel, _ = quantize_model(ctx.teacher, ctx.qconfig, example_input=example)
        return qmodel


def _seeded(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@METHODS.register_module(name="fp")
class FullPrecision(Method):
    """The teacher itself: the reference every row is compared against."""

    name = "fp"
    display_order = 0

    def run(self, ctx: RunContext) -> MethodOutput:
        return MethodOutput(ctx.teacher, calib_data="none", quantized=False)


@METHODS.register_module(name="ptq")
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
        rng = _seeded(ctx.seed, ctx.adapter.device)
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


@METHODS.register_module(name="real-ptq")
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


@METHODS.register_module(name="zeroq")
class ZeroQ(NoisePTQ):
    """ZeroQ: calibrate activation ranges on BN-statistics-distilled inputs; no fine-tuning."""

    name = "zeroq"
    display_order = 30
    options = {"batch_size": 64, "calib_batches": 1, "distill_iters": 500, "lr": 0.5}

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        rng = _seeded(ctx.seed, ctx.adapter.device)
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


@METHODS.register_module(name="zaq")
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

    def run(self, ctx: RunContext) -> MethodOutput:
        cfg = self.zaq_config()
        qmodel = self.quantize(ctx)
        trainer = ZAQTrainer(ctx.adapter, copy.deepcopy(ctx.teacher), qmodel, cfg, ctx.work_dir, ctx.seed,
                             ctx.progress, ctx.snapshot_iters)
        trained = trainer.run(resume=ctx.resume)
        return MethodOutput(trained, calib_data="zaq-generator", iters=cfg.iters)


@METHODS.register_module(name="zaq-official")
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


@METHODS.register_module(name="zaq-no-feat")
class ZAQNoFeature(ZAQ):
    """Ablation: output-level discrepancy only (alpha = 0)."""

    name = "zaq-no-feat"
    display_order = 70
    overrides = {"alpha": 0.0}


@METHODS.register_module(name="zaq-no-act")
class ZAQNoActivation(ZAQ):
    """Ablation: no activation regulariser (beta = 0)."""

    name = "zaq-no-act"
    display_order = 80
    overrides = {"beta": 0.0}


# Methods kept in their own files register on import, so importing this module registers all.
from . import dfq, gdfq, real_kd  # noqa: E402,F401
