"""What every quantization method shares: the run context it receives, the output it returns,
and the :class:`Method` base with its option checks, protocol settings and table attributes.

Every method receives the same :class:`RunContext` (adapter, teacher P, quantization config,
seed, work dir) and returns the model to evaluate plus the calibration source that goes into
the result row's protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapter import TaskAdapter
from ..options import Options, build_options, hashed_fields, recorded_fields
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
    progress: bool = True  # progress bars
    # without bars: one line on stderr as each long step starts (the commands' --no-progress); the
    # Python API leaves it off and is silent (zaqbench.progress)
    progress_lines: bool = False
    snapshot_iters: tuple[int, ...] = ()  # ZAQ: save the returned model at these iterations (curves)
    # The run's generator-free calibration batches (noise, real images, ZeroQ's distilled data),
    # shared by its jobs: they depend on the teacher, the method's settings and the seed, not on the
    # bit width, so ``--bits 8,6,4`` makes them once.
    # Each entry: the batches and the seconds making them took. None: no sharing.
    calib_cache: dict[tuple[str, str, int], tuple[list[torch.Tensor], float]] | None = None


@dataclass
class MethodOutput:
    model: nn.Module
    calib_data: str  # recorded in the row's protocol
    iters: int = 0  # the method's iteration option as set (ZAQ-style ``iters``, ZeroQ's ``distill_iters``)
    quantized: bool = True
    not_applicable: str | None = None  # why the method cannot apply to this model: an n/a row, no score
    # Seconds of set-up that does not depend on the bit width (the calibration batches: noise, real
    # images, ZeroQ's distillation), made by the first job of a run that needs it and reused by the
    # others (``RunContext.calib_cache``); ``shared_made``: this call made it (its time includes them).
    shared_seconds: float = 0.0
    shared_made: bool = False


@dataclass
class NoOptions(Options):
    """A method without options (an empty ``methods.<name>`` section)."""


class Method:
    """Base: ``Options`` declares the method's config section ``methods.<name>`` (a dataclass of
    :func:`zaqbench.options.option` fields; unknown keys and values a field's rule refuses are
    errors when the method is built, i.e. when the plan is)."""

    name = "method"
    #: where the method's rows sit in a result table (lower first; gaps leave room for new methods)
    display_order: int = UNLISTED_ORDER
    #: said after the method's name in a table, e.g. that a row is a real-data reference
    table_note: str = ""
    #: whether the standard grid (tools/regenerate.py without --methods) runs the method
    in_default_grid: bool = True

    Options: ClassVar[type] = NoOptions
    # the method trains or calibrates on real training images (a reference row, not data-free):
    # the plan checks that the task has them before any work
    uses_real_data: bool = False

    def __init__(self, **cfg: Any) -> None:
        self.options = build_options(self.Options, cfg, self.section)
        self.check()

    @property
    def section(self) -> str:
        """The config section of the options, as error messages name it."""
        return f"methods.{self.name}"

    @property
    def cfg(self) -> dict[str, Any]:
        """The options as they enter the job's config hash (:func:`zaqbench.options.hashed_fields`)."""
        return hashed_fields(self.options)

    def check(self) -> None:
        """Checks beyond the options' own rules (e.g. a batch the torchrun ranks cannot share),
        when the method is built; raise ``UserError``."""

    def settings(self) -> dict[str, Any]:
        """The options a row records (``recorded`` fields that are hashed), with the values this
        method runs with, as ``cfg.<option>=<value>`` in ``extra_metrics``: rows of one method with
        other settings can be told apart."""
        return recorded_fields(self.options)

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
