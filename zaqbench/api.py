"""The Python route: quantize a model held in memory, with any registered method.

A notebook user has a model, not a config file. :func:`quantize` wraps the model in a
:class:`ModelAdapter` (input shape and normalisation, feature maps found automatically, an
optional scoring function and real images) and runs one method on it exactly as the runner
does for a config's jobs: the same methods, quantization protocol and layer checks.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .adapter import InputSpec, TaskAdapter
from .errors import UserError
from .zaq.features import stage_features
from .methods import RunContext
from .quant import QConfig, check_quantizable, layer_coverage
from .registry import build_method


class ModelAdapter(TaskAdapter):
    """A task adapter around a model in memory (no config, no training, no task package).

    Args:
        model: the full-precision model P, already trained.
        input_spec: shape and normalisation of one input (the generator's target).
        features: module names whose outputs the feature-level discrepancy aligns; None
            finds them (the last module at each spatial resolution).
        evaluate: ``evaluate(model) -> {metric: value}``; None leaves the report without a score.
        real_images: (N, C, H, W) normalised real images, for the real-data reference
            methods (``real-ptq``, ``real-kd``); None refuses those methods.
    """

    metric = "score"

    def __init__(self, model: nn.Module, input_spec: InputSpec, features: Sequence[str] | None = None,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 real_images: torch.Tensor | None = None) -> None:
        device = next(model.parameters()).device
        super().__init__(cfg={}, model_name=type(model).__name__, data_root=None,
                         cache_dir=Path(tempfile.gettempdir()), device=device)
        self.model = model
        self._input_spec = input_spec
        self._evaluate = evaluate
        self.real_images = real_images
        self._features = list(features) if features is not None else [
            name for name, _ in stage_features(model, torch.zeros(input_spec.shape(1), device=device))]
        if not self._features:
            raise UserError("no feature maps found automatically (the model has no 4-d outputs); "
                            "pass features=[module names]")

    def build_model(self) -> nn.Module:
        return self.model

    def train_teacher(self, model: nn.Module) -> None:
        raise UserError("zaqbench.quantize takes a trained model; it does not train one")

    @property
    def input_spec(self) -> InputSpec:
        return self._input_spec

    @property
    def feature_names(self) -> list[str]:
        return self._features

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self._evaluate is None:
            return {}
        return dict(self._evaluate(model))

    @property
    def dataset_name(self) -> str:
        return "in-memory"

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        if self.real_images is None:
            raise UserError("this method needs real images: pass real_images=(N, C, H, W) tensor to zaqbench.quantize")
        g = torch.Generator().manual_seed(seed)
        n = len(self.real_images)
        for _ in range(num_batches):  # each batch drawn anew: any number of full batches
            idx = torch.randperm(n, generator=g)[:batch_size]
            yield self.real_images[idx].to(self.device)


@dataclass
class QuantizationReport:
    """What :func:`quantize` did: the method and its settings, the protocol, the layers
    quantized and kept in full precision, the optimisation budget, the time, and the score of
    the quantized model (and of the full-precision one) when an ``evaluate`` was given."""

    method: str
    wbits: int
    abits: int
    protocol: dict[str, Any]
    settings: dict[str, Any]
    quantized_layers: list[str]
    full_precision_layers: list[str]
    iters: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    fp_metrics: dict[str, float] = field(default_factory=dict)


def quantize(model: nn.Module, method: str = "zaq", wbits: int = 4, abits: int = 4, *,
             task: TaskAdapter | None = None, input_shape: tuple[int, int, int] | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             features: Sequence[str] | None = None,
             evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
             real_images: torch.Tensor | None = None, quant: dict[str, Any] | None = None,
             seed: int = 0, work_dir: str | Path | None = None, progress: bool = False,
             **options: Any) -> tuple[nn.Module, QuantizationReport]:
    """Quantize ``model`` with a registered method and return (quantized model, report).

    Args:
        model: the trained full-precision model; it is not modified.
        method: a registered method name (``ptq``, ``real-ptq``, ``zeroq``, ``dfq``, ``gdfq``,
            ``zaq``, ``real-kd`` ...).
        wbits, abits: weight and activation bits (2-8, or 32 for full precision).
        task: a task adapter to run on instead of the model alone (e.g. one built by
            ``zaqbench.registry.build_task``); then ``input_shape`` and the rest are its own.
        input_shape: (channels, height, width) of one input, needed without ``task``.
        mean, std: the normalisation inputs already have (one value per channel; the
            generator's target range). Default: 0 and 1.
        features: module names for the feature-level discrepancy; default found automatically.
        evaluate: ``evaluate(model) -> {metric: value}`` to score the result (and P).
        real_images: (N, C, H, W) normalised real images for the real-data methods.
        quant: quantization protocol options (``zaqbench.quant.QConfig`` fields or ``preset``).
        seed: seeds the method's random draws.
        work_dir: where ZAQ-style methods write checkpoints; default a temporary folder.
        progress: show progress bars.
        **options: the method's own options (e.g. ``iters=100, batch_size=32``).

    Returns:
        The quantized model (in eval mode) and a :class:`QuantizationReport`.

    Raises:
        UserError: an unknown method or option, a layer that cannot be quantized, a method
            that does not apply to the model; one line saying what to change.

    Example:
        >>> import torchvision, zaqbench
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> qmodel, report = zaqbench.quantize(model, "ptq", wbits=8, abits=8, input_shape=(3, 32, 32))
        >>> report.protocol["w_granularity"]
        'per-channel'
    """
    model = model.eval()
    if task is None:
        if input_shape is None or len(input_shape) != 3:
            raise UserError("zaqbench.quantize needs input_shape=(channels, height, width) when no task is given")
        channels = int(input_shape[0])
        spec = InputSpec(channels, int(input_shape[1]), int(input_shape[2]),
                         tuple(mean) if mean is not None else (0.0,) * channels,
                         tuple(std) if std is not None else (1.0,) * channels)
        task = ModelAdapter(model, spec, features, evaluate, real_images)
        task.progress = progress
    runner = build_method(method, **options).for_bits(wbits, abits)
    qconfig = runner.qconfig_for(QConfig.from_dict(quant).with_bits(wbits, abits))
    if not qconfig.is_full_precision:
        check_quantizable(model, qconfig)
    with tempfile.TemporaryDirectory(prefix="zaqbench-") as scratch:
        ctx = RunContext(task, model, qconfig, seed, Path(work_dir) if work_dir else Path(scratch),
                         progress=progress)
        torch.manual_seed(seed)
        start = time.perf_counter()
        out = runner.run(ctx)
        seconds = time.perf_counter() - start
    if out.not_applicable:
        raise UserError(f"method '{method}' does not apply to this model: {out.not_applicable}")
    quantized, fp_layers = layer_coverage(out.model) if out.quantized else ([], [])
    report = QuantizationReport(method, wbits, abits, qconfig.protocol(out.calib_data), runner.settings(),
                                quantized, fp_layers, out.iters, round(seconds, 1))
    if evaluate is not None or not isinstance(task, ModelAdapter):
        report.metrics = task.evaluate(out.model)
        report.fp_metrics = task.evaluate(model)
    if progress:
        print(f"[zaqbench] {method} W{wbits}A{abits}: {len(quantized)} of {len(quantized) + len(fp_layers)} "
              f"layers quantized, {report.metrics or 'no evaluate given'}", file=sys.stderr)
    return out.model.eval(), report


def run_config(task: str, model: str | None = None, *, config: str | Path | None = None,
               methods: Sequence[str] | None = None, bits: Sequence[int] | None = None, seed: int = 0,
               out: str | Path | None = None, data_root: str | Path | None = None,
               checkpoint: str | Path | None = None, work_dir: str | Path | None = None,
               cfg_options: Sequence[str] = (),
               skip_existing: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """Run a config's jobs, as ``tools/run_task.py`` does, and return the rows appended to ``out``.

    Args:
        task: a registered task (``cls``, ``det``, ``seg`` or one registered from outside).
        model: a config name under ``configs/<task>/`` (default: the task's default model).
        config: an explicit config file instead of ``model``.
        methods: method names (default: the config's ``default_methods``).
        bits: bit widths, each WbAb (default: 4).
        seed, out, data_root, checkpoint, work_dir, cfg_options, skip_existing: as the runner's flags.
        progress: show progress bars.

    Example:
        >>> rows = zaqbench.run_config("cls", "resnet20", methods=["fp", "ptq"], bits=[8, 4])
        >>> [(r["method"], r["wbits"], r["value"]) for r in rows]
    """
    from .run.runner import build_parser, run_rows

    argv = ["--task", task]
    for flag, value in (("--model", model), ("--config", config), ("--out", out), ("--data-root", data_root),
                        ("--checkpoint", checkpoint), ("--work-dir", work_dir)):
        if value is not None:
            argv += [flag, str(value)]
    if methods:
        argv += ["--methods", ",".join(methods)]
    if bits:
        argv += ["--bits", ",".join(str(b) for b in bits)]
    argv += ["--seeds", str(seed)] + (["--skip-existing"] if skip_existing else []) + \
        ([] if progress else ["--no-progress"]) + (["--cfg-options", *cfg_options] if cfg_options else [])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        raise UserError(f"invalid arguments for run_config: {' '.join(argv)}") from None
    return run_rows(args)
