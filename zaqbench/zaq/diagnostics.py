"""What a ZAQ run logs besides its losses, to see *why* it helps or hurts.

Every quantity is observed, never fed back into training: clipped activations
(the clipped straight-through estimator gives them zero gradient), how far Q's
weights and BN statistics moved from P's, and statistics of the generated
images against the range real normalised images can take.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .generator import valid_input_range
from ..adapter import InputSpec
from ..quant import act_quantizers, quant_layers
from ..quant.fake_quant import affine_qparams, quant_range


@contextmanager
def clip_fractions(qmodel: nn.Module) -> Iterator[dict[str, float]]:
    """Within the block, ``fractions[layer]`` is the share of the input activations of each
    quantized layer that fall outside its frozen range (and so get no gradient through the
    straight-through estimator). Layers still observing or without a range are skipped."""
    fractions: dict[str, float] = {}
    handles = []

    def make_hook(name: str):
        def hook(quantizer, inputs) -> None:
            if not quantizer.active or quantizer.observing or not quantizer.has_range:
                return
            x = inputs[0].detach()
            scale, zero_point = affine_qparams(quantizer.min_val, quantizer.max_val, quantizer.bits,
                                               quantizer.symmetric)
            qmin, qmax = quant_range(quantizer.bits, quantizer.symmetric)
            lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale  # representable range
            fractions[name] = float(((x < lo - scale / 2) | (x > hi + scale / 2)).float().mean())
        return hook

    try:
        for name, quantizer in act_quantizers(qmodel):
            handles.append(quantizer.register_forward_pre_hook(make_hook(name)))
        yield fractions
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def image_stats(x: torch.Tensor, spec: InputSpec) -> dict[str, float]:
    """Min / max / mean / std of a generated batch (N, C, H, W) and the share of its values
    outside the normalised image of pixel values [0, 1]."""
    lo, hi = (t.to(x.device) for t in valid_input_range(spec))
    outside = ((x < lo - 1e-4) | (x > hi + 1e-4)).float().mean()
    return {"img_min": float(x.min()), "img_max": float(x.max()), "img_mean": float(x.mean()),
            "img_std": float(x.std()), "img_outside": float(outside)}


@torch.no_grad()
def weight_drift(qmodel: nn.Module, teacher: nn.Module) -> float:
    """Mean over quantized layers of ||W_q - W_p|| / ||W_p||."""
    p_modules = dict(teacher.named_modules())
    ratios = [float((layer.weight - p_modules[name].weight).norm() / p_modules[name].weight.norm().clamp_min(1e-12))
              for name, layer in quant_layers(qmodel) if name in p_modules]
    return sum(ratios) / len(ratios) if ratios else 0.0


@torch.no_grad()
def bn_drift(qmodel: nn.Module, teacher: nn.Module) -> float:
    """Mean over BN layers of ||mu_q - mu_p|| / ||mu_p|| (non-zero only if Q's BN updates)."""
    p_modules = dict(teacher.named_modules())
    ratios = []
    for name, m in qmodel.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and name in p_modules:
            ref = p_modules[name].running_mean
            ratios.append(float((m.running_mean - ref).norm() / ref.norm().clamp_min(1e-12)))
    return sum(ratios) / len(ratios) if ratios else 0.0
