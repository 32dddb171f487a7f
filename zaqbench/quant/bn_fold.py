"""Fold BatchNorm into the convolution that feeds it.

Which conv feeds which BN is found by running the model once and matching
tensors (a BN whose input is exactly a conv's output), so it works for any
model (torchvision, mmcv ``ConvModule``) without guessing from attribute names.
"""
from __future__ import annotations

import torch
from torch import nn


def find_conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """Return (conv_name, bn_name) pairs where the BN consumes the conv's output directly."""
    produced_by: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                handles.append(module.register_forward_hook(
                    lambda m, i, o, name=name: produced_by.__setitem__(id(o), name)))
            elif isinstance(module, nn.BatchNorm2d):
                handles.append(module.register_forward_pre_hook(
                    lambda m, i, name=name: pairs.append((produced_by[id(i[0])], name))
                    if id(i[0]) in produced_by else None))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_input)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    # A conv feeding two BNs cannot be folded into both; keep unique convs only.
    convs = [c for c, _ in pairs]
    return [(c, b) for c, b in pairs if convs.count(c) == 1]


def bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """gamma / sqrt(running_var + eps), shape (C,): what folding multiplies the conv's rows by."""
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


@torch.no_grad()
def fold_bn(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """Fold every directly-fed BatchNorm2d into its conv, in place; BN becomes Identity."""
    modules = dict(model.named_modules())
    pairs = find_conv_bn_pairs(model, example_input)
    for conv_name, bn_name in pairs:
        conv: nn.Conv2d = modules[conv_name]
        bn: nn.BatchNorm2d = modules[bn_name]
        factor = bn_scale(bn)
        beta = bn.bias if bn.affine else torch.zeros_like(factor)
        conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
        old_bias = conv.bias if conv.bias is not None else torch.zeros_like(factor)
        new_bias = beta + (old_bias - bn.running_mean) * factor
        conv.bias = nn.Parameter(new_bias.detach().clone())
        parent_name, _, attr = bn_name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, attr, nn.Identity())
    return pairs
