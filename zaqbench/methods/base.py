"""What every quantization method shares: the run context it receives, the output it returns,
and the :class:`Method` base with its option checks, protocol settings and table attributes.

Every method receives the same :class:`RunContext` (adapter, teacher P, quantization config,
seed, work dir) and returns the model to evaluate plus the calibration source that goes into
the result row's protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapter import TaskAdapter
from ..errors import UserError
from ..quant import QConfig, quantize_model
from ..registry import UNLISTED_ORDER


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


def seeded(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
