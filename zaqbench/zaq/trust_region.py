"""A trust region around P's weights, measured in Q's own quantization steps.

Why: on a CPU budget (batch 32, tens to hundreds of iterations) the adversarial
game does not converge, and plain SGD on Q drifts away from P and collapses
(docs/findings/stable_zaq.md). Bounding each weight to ``k`` quantization
steps of P's weight keeps what ZAQ can still do well -- choose, per weight, a
neighbouring grid point that agrees better with P (as AdaRound does with
rounding) -- and makes the damage any run can do proportional to the grid:
tiny at 8 bits, larger at 4 bits. The bound needs no per-model tuning because
the step comes from each layer's own weights and bit width.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quant import quant_layers
from ..quant.fake_quant import FakeQuantizer, affine_qparams


def weight_step(weight: torch.Tensor, quantizer: FakeQuantizer) -> torch.Tensor:
    """The quantization step of ``weight`` under ``quantizer``, broadcastable to ``weight``:
    shape (C_out, 1, ...) for per-channel quantizers, () for per-tensor ones."""
    lo, hi = quantizer.current_range(weight.detach())  # the range the quantizer itself would use
    scale, _ = affine_qparams(lo, hi, quantizer.bits, quantizer.symmetric, quantizer.include_zero)
    if quantizer.per_channel:
        shape = [1] * weight.dim()
        shape[quantizer.ch_axis] = -1
        return scale.view(shape)
    return scale


class WeightTrustRegion:
    """``project()`` clamps every quantized weight of Q to P's weight +- ``steps`` steps.

    Built from Q before training (Q's weights then equal P's); the bounds are
    plain tensors, recomputed identically when a run is resumed.
    """

    def __init__(self, qmodel: nn.Module, steps: float) -> None:
        if steps <= 0:
            raise ValueError(f"trust region steps must be > 0, got {steps}")
        self.steps = steps
        self.bounds: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for _, layer in quant_layers(qmodel):
            if not layer.weight_quant.active:
                continue
            w = layer.weight.detach().clone()
            radius = steps * weight_step(w, layer.weight_quant)
            self.bounds.append((layer.weight, w - radius, w + radius))

    @torch.no_grad()
    def project(self) -> None:
        for weight, lo, hi in self.bounds:
            torch.maximum(torch.minimum(weight, hi), lo, out=weight)

    @torch.no_grad()
    def drift_in_steps(self) -> float:
        """Largest |W_q - W_p| over all weights, in quantization steps (diagnostic)."""
        worst = 0.0
        for weight, lo, hi in self.bounds:
            centre, radius = (lo + hi) / 2, (hi - lo) / 2
            worst = max(worst, float(((weight - centre).abs() / radius.clamp_min(1e-12)).max()) * self.steps)
        return worst


class ProximalPull:
    """``penalty()`` = 1/2 * sum over Q's quantized weights of ((W_q - W_p) / step)^2.

    Why: Adam with grid-scaled updates moves every weight about ``q_lr`` steps per update
    whatever the size of its gradient, so at 8 and 6 bits, where the discrepancy has little
    to say about any one weight, the noise of the generated batches still walks most
    weights across their rounding boundaries (docs/findings/bit_width_rule.md). Added to
    Q's loss with weight ``lambda``, the penalty gives each weight the stationary point
    ``(W_q - W_p) / step = -(dD/dW * step) / lambda``: the loss change of a one-step move,
    in units of ``lambda``. The L1 discrepancies' gradients do not shrink with the bit width
    while the step does, so the same ``lambda`` lets weights move where a grid step matters
    (4 bits) and holds them near P's where it does not (8 bits) -- a damping derived from
    each layer's own grid, with no per-model setting. Steps are P's, fixed at the start.
    """

    def __init__(self, qmodel: nn.Module) -> None:
        self.anchors: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for _, layer in quant_layers(qmodel):
            if layer.weight_quant.active:
                w = layer.weight.detach().clone()
                self.anchors.append((layer.weight, w, weight_step(w, layer.weight_quant).clamp_min(1e-12)))

    def penalty(self) -> torch.Tensor:
        """A scalar with gradients towards P's weights (shape ())."""
        terms = [(((weight - anchor) / step) ** 2).sum() for weight, anchor, step in self.anchors]
        return 0.5 * torch.stack(terms).sum()


class GridScaledUpdates:
    """Rescales each optimiser update of Q's quantized weights by P's per-channel grid step.

    Used with Adam, whose update is invariant to the gradient's scale: the move of a weight per
    update is then about ``lr`` grid steps of its own channel, whatever the model, layer or bit
    width. That is a learning rate in the units that matter for a quantized model, where a plain
    SGD rate means something different for every model (measured: 1e-3 helps ResNet-20 at W4A4
    and destroys MobileNetV2 at W8A8 within one iteration).
    """

    def __init__(self, qmodel: nn.Module) -> None:
        self.params: list[tuple[nn.Parameter, torch.Tensor]] = []
        for _, layer in quant_layers(qmodel):
            if layer.weight_quant.active:
                self.params.append((layer.weight, weight_step(layer.weight, layer.weight_quant)))
        self._before: list[torch.Tensor] = []

    @torch.no_grad()
    def remember(self) -> None:
        """Call before ``optimizer.step()``."""
        self._before = [w.detach().clone() for w, _ in self.params]

    @torch.no_grad()
    def rescale(self) -> None:
        """Call after ``optimizer.step()``: w = w_before + step * (w - w_before)."""
        for (weight, step), before in zip(self.params, self._before):
            weight.copy_(before + (weight - before) * step)
        self._before = []
