"""Where the time of one ZAQ step goes: a torch.profiler trace sorted into the loop's parts.

Every operator's own time (``self`` time, children excluded) is given to one part:

* forward operators to the innermost labelled range they ran in: the generator, P and Q
  (forward hooks open and close a range around each), Q's fake quantizers (inside Q), the
  relation maps of D_f (labelled in ``zaqbench.zaq.discrepancy``), the optimisers' steps
  (torch labels them ``Optimizer.step#...``);
* backward operators to the part whose forward operator created their autograd node (the
  profiler gives both the same sequence number).

What no operator covers (Python, dispatch, the profiler itself) is the step's wall time less
the operators' total, reported as its own row.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ..quant.fake_quant import FakeQuantizer
from ..zaq.discrepancy import PROFILE_LABELS

GENERATOR, P_NET, Q_NET, FAKE_QUANT = "zaq.generator", "zaq.P", "zaq.Q", "zaq.fake-quant"
OPTIMISER_PREFIX = "Optimizer."
#: label -> the part's name in the table, in the table's order
PARTS: dict[str, str] = {
    PROFILE_LABELS["spatial"]: "relation maps, spatial (HW x HW)",
    PROFILE_LABELS["channel"]: "relation maps, channel (C x C)",
    PROFILE_LABELS["normalise"]: "relation maps, normalise / pool",
    P_NET: "P network",
    Q_NET: "Q network (fake-quant excluded)",
    FAKE_QUANT: "fake-quant (weights, activations)",
    GENERATOR: "generator",
    OPTIMISER_PREFIX: "optimiser steps (Q, G)",
    "": "other operators (D_o, L_a, draws, gradient accumulation)",
}
OUTSIDE = "outside operators (Python, dispatch, profiler)"


@contextmanager
def labelled_forwards(modules: dict[str, list[nn.Module]]) -> Iterator[None]:
    """Within the block, each call of a module in ``modules[label]`` runs inside a profiler
    range named ``label``. The hooks are removed on exit."""
    handles = []
    open_ranges: dict[int, list[Any]] = {}

    def enter(label: str):
        def hook(module: nn.Module, args: Any) -> None:
            rf = record_function(label)
            rf.__enter__()
            open_ranges.setdefault(id(module), []).append(rf)
        return hook

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        open_ranges[id(module)].pop().__exit__(None, None, None)

    try:
        for label, mods in modules.items():
            for m in mods:
                handles.append(m.register_forward_pre_hook(enter(label)))
                handles.append(m.register_forward_hook(leave))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class PartTime:
    part: str
    forward_s: float = 0.0
    backward_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


def _label_of(event: Any) -> str | None:
    if event.name in PARTS:
        return event.name
    if event.name.startswith(OPTIMISER_PREFIX):
        return OPTIMISER_PREFIX
    return None


def attribute(events: list[Any]) -> dict[str, PartTime]:
    """Self time of every profiled CPU event, summed per part (label -> forward and backward)."""
    def innermost_label(event: Any) -> str:
        e = event
        while e is not None:
            label = _label_of(e)
            if label is not None:
                return label
            e = e.cpu_parent
        return ""

    # forward: the sequence number of each autograd-recording operator -> its part
    forward_label: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::engine::evaluate_function"):
            forward_label.setdefault(e.sequence_nr, innermost_label(e))
    parts = {label: PartTime(name) for label, name in PARTS.items()}
    for e in events:
        label, backward = None, False
        node = e
        while node is not None:  # the nearest enclosing backward node decides, else the forward label
            if node.name.startswith("autograd::engine::evaluate_function"):
                label, backward = forward_label.get(node.sequence_nr, ""), True
                break
            node = node.cpu_parent
        if label is None:
            label = innermost_label(e)
        seconds = e.self_cpu_time_total / 1e6
        if backward:
            parts[label].backward_s += seconds
        else:
            parts[label].forward_s += seconds
    return parts


def profile_step(trainer: Any) -> tuple[float, dict[str, PartTime], Any]:
    """Profile one ``trainer.step()``; (wall seconds, time per part, the profiler)."""
    quantizers = [m for m in trainer.qmodel.modules() if isinstance(m, FakeQuantizer)]
    modules = {GENERATOR: [trainer.generator], P_NET: [trainer.teacher], Q_NET: [trainer.qmodel],
               FAKE_QUANT: quantizers}
    with labelled_forwards(modules), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer.step()
        wall = time.perf_counter() - start
    return wall, attribute(list(prof.events())), prof


def format_table(wall: float, parts: dict[str, PartTime]) -> str:
    """The parts as a markdown table: forward, backward, total seconds and share of the step."""
    inside = sum(p.total_s for p in parts.values())
    rows = [p for p in parts.values()] + [PartTime(OUTSIDE, forward_s=max(0.0, wall - inside))]
    lines = ["| part | forward (s) | backward (s) | total (s) | share |", "|---|---|---|---|---|"]
    for p in rows:
        lines.append(f"| {p.part} | {p.forward_s:.3f} | {p.backward_s:.3f} | {p.total_s:.3f} | "
                     f"{100 * p.total_s / wall:.1f} % |")
    lines.append(f"| **step (wall, under the profiler)** | | | {wall:.3f} | 100 % |")
    return "\n".join(lines)
