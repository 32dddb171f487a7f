"""Capture intermediate feature maps with forward hooks that never outlive the call."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import UserError


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


@dataclass(frozen=True)
class _Call:
    """One module call seen by the probe: its name, (H, W) in and out, and tensor ids."""

    order: int
    name: str
    in_id: int | None
    in_hw: tuple[int, int] | None
    out_id: int | None
    out_hw: tuple[int, int] | None


def _hw(t: Any, like: tuple[int, int]) -> tuple[int, int] | None:
    """(H, W) of a 4-d map with the input's aspect ratio ``like``; None for anything else
    (vectors, and channels-last (N, H, W, C) tensors of transformer blocks)."""
    if not (isinstance(t, torch.Tensor) and t.dim() == 4):
        return None
    h, w = t.shape[-2:]
    return (h, w) if abs(h * like[1] - w * like[0]) <= max(like) else None


def _is_ancestor(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def stage_features(model: nn.Module, example: torch.Tensor, max_stages: int = 4) -> list[tuple[str, tuple[int, int]]]:
    """Default feature maps of any CNN: the output of the last module at each spatial resolution.

    One probe forward of ``example`` (N, C, H, W) with hooks on every module records which
    module outputs which tensor. For each downsampling module (input (H, W) larger than its
    output's) the outermost one per input resolution is taken — a whole stage or block, not
    the strided conv inside it — and the feature is the module that produced its input: the
    last map at the old resolution (ResNet ``layer1``-``layer4``, MobileNetV2 ``features.3``...).
    The deepest map before a functional pooling (no module to see) closes the list. Of the
    modules that output the same tensor the shallowest wins, except containers of other chosen
    features. Returns the deepest ``max_stages`` as (module name, (H, W)), shallow to deep.
    """
    like = tuple(example.shape[-2:])
    calls: list[_Call] = []
    keep: list[torch.Tensor] = []  # tensors stay alive during the probe, so their ids are unique
    handles = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: Any) -> None:
            x = args[0] if args else None
            keep.extend(t for t in (x, out) if isinstance(t, torch.Tensor))
            in_hw, out_hw = _hw(x, like), _hw(out, like)
            calls.append(_Call(len(calls), name, id(x) if in_hw else None, in_hw,
                               id(out) if out_hw else None, out_hw))
        return record

    was_training = model.training
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook(name)))
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    producers: dict[int, list[_Call]] = {}
    for c in calls:
        if c.out_id is not None:
            producers.setdefault(c.out_id, []).append(c)
    # the outermost downsampling call per input resolution -> the tensor fed into it
    fed: dict[tuple[int, int], _Call] = {}
    for c in calls:
        if c.in_hw and c.out_hw and c.in_hw != c.out_hw and c.in_hw[0] * c.in_hw[1] > c.out_hw[0] * c.out_hw[1]:
            best = fed.get(c.in_hw)
            if best is None or c.name.count(".") < best.name.count("."):
                fed[c.in_hw] = c
    tensors = [(c.in_id, c.in_hw) for c in fed.values() if c.in_id in producers]
    last = next((c for c in reversed(calls) if c.out_hw and c.out_hw[0] * c.out_hw[1] > 1), None)
    if last is not None and last.out_hw not in fed:
        tensors.append((last.out_id, last.out_hw))
    picked: list[tuple[int, list[_Call], tuple[int, int]]] = []
    for tid, hw in tensors:
        made = producers[tid]
        picked.append((made[-1].order, made, hw))
    picked.sort(key=lambda p: p[0])
    chosen: list[tuple[str, tuple[int, int]]] = []
    for _, made, hw in picked:
        others = [m.name for _, ms, _ in picked if ms is not made for m in ms]
        usable = [m for m in made if not any(_is_ancestor(m.name, o) for o in others)] or made[-1:]
        best = min(usable, key=lambda m: (m.name.count("."), -m.order))
        if hw[0] * hw[1] > 1 and best.name not in (n for n, _ in chosen):
            chosen.append((best.name, hw))
    return chosen[-max_stages:]
