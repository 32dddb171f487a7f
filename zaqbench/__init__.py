"""zaqbench: a benchmark suite for zero-shot adversarial quantization (ZAQ).

The core is task-agnostic: it knows nothing about classification, detection
or segmentation. Tasks live in the top-level ``tasks`` package and plug in
through :data:`zaqbench.registry.TASKS`.
"""

__version__ = "0.1.0"
