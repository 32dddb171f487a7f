"""zaqbench: a benchmark suite for zero-shot adversarial quantization (ZAQ).

The core is task-agnostic: it knows nothing about classification, detection
or segmentation. Tasks live in the top-level ``tasks`` package and plug in
through :data:`zaqbench.registry.TASKS`; methods through :data:`zaqbench.registry.METHODS`.

The public API is loaded on first use (importing ``zaqbench`` imports no torch):

    >>> import zaqbench
    >>> qmodel, report = zaqbench.quantize(model, "zaq", wbits=4, abits=4, input_shape=(3, 32, 32))
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "quantize": "zaqbench.api",
    "run_config": "zaqbench.api",
    "QuantizationReport": "zaqbench.api",
    "ModelAdapter": "zaqbench.api",
    "save_quantized": "zaqbench.export",
    "load_quantized": "zaqbench.export",
    "InputSpec": "zaqbench.adapter",
    "TaskAdapter": "zaqbench.adapter",
    "QConfig": "zaqbench.quant",
    "quantize_model": "zaqbench.quant",
    "UserError": "zaqbench.errors",
    "TASKS": "zaqbench.registry",
    "METHODS": "zaqbench.methods",  # importing the methods registers them
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'zaqbench' has no attribute '{name}'")
