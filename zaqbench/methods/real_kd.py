"""``real-kd`` as a method: ZAQ's Q training on real images (the trainer is ``zaqbench.zaq.real_kd``)."""
from __future__ import annotations

from ..zaq.real_kd import RealDataTrainer
from .zaq import ZAQ


class RealKD(ZAQ):
    """Reference row, NOT zero-shot: ZAQ's Q training on real training images (no generator)."""

    name = "real-kd"
    uses_real_data = True
    display_order = 95
    table_note = "(reference, uses real data)"
    trainer_class = RealDataTrainer
    calib_data = "real-train-images"
