"""Which iterate a ZAQ run returns: its last, or the one closest to P on distilled probe images.

The adversarial loop can walk Q away from P on real data while its own losses look fine, and at
low bit widths a real model's calibrated start can be the best Q the run ever holds. With no real
data, the run can still compare its iterates on images that look like the training data to P:
ZeroQ's distilled images, optimised so that every BatchNorm layer of P sees its stored running
statistics. They are made once per run, from an RNG of their own (training is unchanged), and
never come from the generator, whose images are where Q and P disagree by design.

Every ``interval`` iterations (and at iteration 0, the calibrated start) the model the run would
return is scored by D_o against P on the probes; the run returns the lowest-scoring one (the
earlier on a tie). With ``z > 0`` a later iterate replaces the kept one only if its per-image D_o
is lower by more than ``z`` standard errors of the paired per-image differences: a few probe
images cannot tell apart iterates whose D_o differs by a few percent, and then the earlier one,
the start first, stays. Scoring reads no label and no real image.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from ..quant import load_quantizer_state, quantizer_state
from .discrepancy import output_discrepancy, output_discrepancy_per_sample

#: the probes' own RNG stream: never the run's training draws
PROBE_SEED_OFFSET = 3_000_017


class ProbeSelection:
    """The best iterate so far by D_o on fixed probe images (N, C, H, W), and P's outputs on them."""

    def __init__(self, teacher: nn.Module, images: torch.Tensor,
                 forward: Callable[[nn.Module, torch.Tensor], Any], z: float = 0.0) -> None:
        self.images = images
        self.forward = forward
        self.z = z
        with torch.no_grad():
            self.p_out = forward(teacher.eval(), images)
        self.best_iteration = -1
        self.best_score = float("inf")
        self.best_state: dict[str, Any] | None = None
        self.best_per_image: torch.Tensor | None = None
        self.scores: dict[int, float] = {}

    @torch.no_grad()
    def measure(self, model: nn.Module) -> tuple[float, torch.Tensor]:
        """(D_o, per-image D_o (N,)) of ``model`` (in eval mode) against P on the probes; lower is closer."""
        was_training = model.training
        model.eval()
        try:
            out = self.forward(model, self.images)
            return float(output_discrepancy(out, self.p_out)), output_discrepancy_per_sample(out, self.p_out)
        finally:
            model.train(was_training)

    def score(self, model: nn.Module) -> float:
        return self.measure(model)[0]

    def beats_kept(self, score: float, per_image: torch.Tensor) -> bool:
        """Whether a later iterate with these scores replaces the kept one (strict: on a tie the
        earlier iterate, the start first, stays)."""
        if self.best_per_image is None or self.z == 0:
            return score < self.best_score
        return bool(paired_gain(per_image, self.best_per_image) > self.z)

    def offer(self, iteration: int, model: nn.Module) -> None:
        """Score the model the run would return at ``iteration`` and keep it if it beats the kept one."""
        score, per_image = self.measure(model)
        self.scores[iteration] = round(score, 6)
        if self.beats_kept(score, per_image):
            self.best_iteration, self.best_score, self.best_per_image = iteration, score, per_image
            self.best_state = {"qmodel": copy.deepcopy(model.state_dict()), "quantizer": quantizer_state(model)}

    def choose(self, iteration: int, current: nn.Module) -> tuple[nn.Module, int]:
        """(the model to return now, its iteration): ``current`` (the model at ``iteration``, already
        offered or not) against the best kept; the kept state is loaded into ``current`` if it wins."""
        if iteration not in self.scores:
            if self.beats_kept(*self.measure(current)):
                return current, iteration
        elif self.best_iteration == iteration:
            return current, iteration
        if self.best_state is None:
            return current, iteration
        current.load_state_dict(self.best_state["qmodel"])
        load_quantizer_state(current, self.best_state["quantizer"])
        return current, self.best_iteration

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "best_iteration": self.best_iteration, "best_score": self.best_score,
                "best_per_image": self.best_per_image, "best_state": self.best_state,
                "scores": {str(k): v for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_iteration = int(state["best_iteration"])
        self.best_score = float(state["best_score"])
        self.best_state = state["best_state"]
        self.best_per_image = state.get("best_per_image")
        self.scores = {int(k): float(v) for k, v in state["scores"].items()}


def paired_gain(candidate: torch.Tensor, kept: torch.Tensor) -> float:
    """How many standard errors lower the candidate's per-image D_o (N,) is than the kept one's
    (the same N images): mean(kept - candidate) / (std / sqrt(N)); +inf if every image is lower
    by the same amount, 0 if they are identical."""
    diff = (kept - candidate).double()
    mean = float(diff.mean())
    spread = float(diff.std()) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    if spread == 0:
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / spread
