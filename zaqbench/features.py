"""Capture intermediate feature maps with forward hooks that never outlive the call."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .errors import UserError


def flatten_tensors(obj: Any) -> list[torch.Tensor]:
    """All tensors in a nested tensor / list / tuple / dict, in a stable order
    (dicts by sorted key), so P's and Q's outputs line up element by element."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in flatten_tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in flatten_tensors(item)]
    return []


def resolve_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        top = ", ".join(n for n, _ in model.named_children())
        raise UserError(f"feature module(s) {missing} not found in the model; top-level modules are: {top}")
    return [modules[n] for n in names]


@contextmanager
def capture_features(model: nn.Module, names: list[str]) -> Iterator[dict[str, Any]]:
    """Within the block, ``feats[name]`` holds the latest output of each named module."""
    feats: dict[str, Any] = {}
    handles = []
    try:
        for name, module in zip(names, resolve_modules(model, names)):
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: feats.__setitem__(name, o)))
        yield feats
    finally:
        for h in handles:
            h.remove()


def forward_with_features(
    model: nn.Module, names: list[str], forward, x: torch.Tensor, via: nn.Module | None = None
) -> tuple[Any, list[torch.Tensor]]:
    """Run ``forward(model, x)``; return (raw outputs, flat list of feature tensors).

    ``via``: a wrapper of ``model`` to call instead (DistributedDataParallel, which averages
    the gradients); the hooks stay on ``model``'s own modules, so the names are unchanged.
    """
    with capture_features(model, names) as feats:
        out = forward(via if via is not None else model, x)
    return out, [t for n in names for t in flatten_tensors(feats.get(n))]
