"""Quantization methods compared side by side; each is registered in ``METHODS``.

Every method receives the same :class:`RunContext` (adapter, teacher P,
quantization config, seed, work dir) and returns the model to evaluate plus
the calibration source that goes into the result row's protocol.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import distributed
from .adapter import TaskAdapter
from .engine import ZAQConfig, ZAQTrainer
from .errors import UserError
from .quant import QConfig, calibrate_activations, quantize_model
from .registry import METHODS
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


@dataclass
class MethodOutput:
    model: nn.Module
    calib_data: str  # recorded in the row's protocol
    iters: int = 0  # optimisation iterations (ZAQ loop, ZeroQ distillation)
    quantized: bool = True


class Method:
    """Base: ``cfg`` holds the method's config section (unknown keys are errors)."""

    options: dict[str, Any] = {}

    def __init__(self, **cfg: Any) -> None:
        unknown = sorted(set(cfg) - set(self.options))
        if unknown:
            raise UserError(f"unknown option(s) {unknown} for method '{self.name}'; "
                            f"valid options: {sorted(self.options)}")
        self.cfg = {**self.options, **cfg}

    name = "method"

    def run(self, ctx: RunContext) -> MethodOutput:
        raise NotImplementedError

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

    def run(self, ctx: RunContext) -> MethodOutput:
        return MethodOutput(ctx.teacher, calib_data="none", quantized=False)


@METHODS.register_module(name="ptq")
class NoisePTQ(Method):
    """Data-free post-training quantization: weights min/max, activation ranges from N(0, 1) inputs."""

    name = "ptq"
    options = {"batch_size": 64, "calib_batches": 4}

    def __init__(self, **cfg: Any) -> None:
        super().__init__(**cfg)
        # under torchrun every rank calibrates on its rows of each batch: fail at plan time
        distributed.local_batch(self.cfg["batch_size"], f"methods.{self.name}.batch_size")

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        rng = _seeded(ctx.seed, ctx.adapter.device)
        for _ in range(self.cfg["calib_batches"]):
            yield torch.randn(ctx.adapter.input_spec.shape(self.cfg["batch_size"]), generator=rng,
                              device=ctx.adapter.device)

    def run(self, ctx: RunContext) -> MethodOutput:
        qmodel = self.quantize(ctx)
        # under torchrun each rank observes its rows of every batch; the ranges are reduced per observation
        calibrate_activations(qmodel, (distributed.local_rows(x) for x in self.batches(ctx)),
                              ctx.adapter.forward_raw)
        return MethodOutput(qmodel.eval(), calib_data="gaussian-noise")


@METHODS.register_module(name="real-ptq")
class RealPTQ(NoisePTQ):
    """Reference row, NOT zero-shot: activation ranges from real training images."""

    name = "real-ptq"

    def batches(self, ctx: RunContext) -> Iterator[torch.Tensor]:
        for x in ctx.adapter.real_batches(self.cfg["batch_size"], self.cfg["calib_batches"], ctx.seed):
            yield x.to(ctx.adapter.device)

    def run(self, ctx: RunContext) -> MethodOutput:
        out = super().run(ctx)
        return replace(out, calib_data="real-train-images")


@METHODS.register_module(name="zeroq")
class ZeroQ(NoisePTQ):
    """ZeroQ: calibrate activation ranges on BN-statistics-distilled inputs; no fine-tuning."""

    name = "zeroq"
    options = {"batch_size": 64, "calib_batches": 1, "distill_iters": 500, "lr": 0.5}

    def run(self, ctx: RunContext) -> MethodOutput:
        rng = _seeded(ctx.seed, ctx.adapter.device)
        shape = ctx.adapter.input_spec.shape(self.cfg["batch_size"])
        # under torchrun every rank distils its rows of each batch, with the whole batch's BN statistics
        batches = []
        for _ in range(self.cfg["calib_batches"]):
            init = distributed.local_rows(torch.randn(shape, generator=rng, device=ctx.adapter.device))
            batches.append(distill_batch(ctx.adapter, ctx.teacher, self.cfg["batch_size"], self.cfg["distill_iters"],
                                         self.cfg["lr"], None, ctx.progress, init=init)[0])
        qmodel = self.quantize(ctx)
        calibrate_activations(qmodel, batches, ctx.adapter.forward_raw)
        return MethodOutput(qmodel.eval(), calib_data="zeroq-distilled",
                            iters=self.cfg["distill_iters"] * self.cfg["calib_batches"])


@METHODS.register_module(name="zaq")
class ZAQ(Method):
    """Zero-shot adversarial quantization (Liu, Zhang, Wang, CVPR 2021)."""

    name = "zaq"
    options = {f: getattr(ZAQConfig(), f) for f in ZAQConfig.__dataclass_fields__}
    overrides: dict[str, Any] = {}

    def __init__(self, **cfg: Any) -> None:
        super().__init__(**cfg)
        # impossible values, and a global batch the torchrun ranks cannot share, fail when the
        # plan is built, before any work
        distributed.local_batch(self.zaq_config().batch_size, f"methods.{self.name}.batch_size")

    def zaq_config(self) -> ZAQConfig:
        return ZAQConfig.from_dict({**self.cfg, **self.overrides})

    def run(self, ctx: RunContext) -> MethodOutput:
        cfg = self.zaq_config()
        qmodel = self.quantize(ctx)
        trainer = ZAQTrainer(ctx.adapter, copy.deepcopy(ctx.teacher), qmodel, cfg, ctx.work_dir, ctx.seed,
                             ctx.progress, ctx.snapshot_iters)
        trained = trainer.run(resume=ctx.resume)
        return MethodOutput(trained, calib_data="zaq-generator", iters=cfg.iters)


@METHODS.register_module(name="zaq-no-feat")
class ZAQNoFeature(ZAQ):
    """Ablation: output-level discrepancy only (alpha = 0)."""

    name = "zaq-no-feat"
    overrides = {"alpha": 0.0}


@METHODS.register_module(name="zaq-no-act")
class ZAQNoActivation(ZAQ):
    """Ablation: no activation regulariser (beta = 0)."""

    name = "zaq-no-act"
    overrides = {"beta": 0.0}
