"""A task defined outside ``tasks/``: what docs/adding_a_task.md walks through.

Toy problem: 8x8 single-channel images whose label is the quadrant holding a
bright blob (4 classes). Everything the suite needs comes from the adapter.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zaqbench.adapter import InputSpec, TaskAdapter
from zaqbench.errors import UserError
from zaqbench.registry import TASKS


def make_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 2.0
    return x, labels


@TASKS.register_module(name="toy")
class ToyAdapter(TaskAdapter):
    title = "Toy quadrants"
    metric = "accuracy"
    task_fields = frozenset({"width", "eval", "arch"})  # task.<anything else> is a typo, reported before any work

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_x, self.train_y = make_split(256, 0)
        self.test_x, self.test_y = make_split(128, 1)

    def check(self) -> None:
        """The pattern every adapter follows: each field it reads is checked here, before any work,
        and a bad value is one ``UserError`` line naming the field and the fix."""
        super().check()
        width = self.task_cfg.get("width", 8)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise UserError(f"task.width={width!r} is not valid; use a positive integer, e.g. task.width=8")
        if self.task_cfg.get("arch", "conv") not in ("conv", "mlp"):
            raise UserError(f"task.arch={self.task_cfg['arch']!r} is not valid; use 'conv' or 'mlp'")

    def build_model(self) -> nn.Module:
        width = int(self.task_cfg.get("width", 8))
        if self.task_cfg.get("arch") == "mlp":  # no conv at all: what DFQ cannot equalize (its n/a path)
            return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 4)).to(self.device)
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 4),
        ).to(self.device)

    def teacher_key(self) -> dict[str, Any]:
        """Everything the teacher depends on: the architecture (arch, width) and the (fixed) data and
        recipe. The run's seed is not part of it: the core trains teachers from a fixed seed."""
        return {**super().teacher_key(), "arch": self.task_cfg.get("arch", "conv"),
                "width": int(self.task_cfg.get("width", 8)), "recipe": "adam-1e-2-60"}

    def train_teacher(self, model: nn.Module) -> None:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(60):
            loss = F.cross_entropy(model(self.train_x), self.train_y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(channels=1, height=8, width=8)

    @property
    def feature_names(self) -> list[str]:
        return ["2", "5"]  # the two ReLU outputs of the Sequential

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        bs = int((self.task_cfg.get("eval") or {}).get("batch_size", 64))
        correct = sum((model(self.test_x[i:i + bs]).argmax(1) == self.test_y[i:i + bs]).sum().item()
                      for i in range(0, len(self.test_x), bs))
        return {"accuracy": 100.0 * correct / len(self.test_x)}

    @property
    def dataset_name(self) -> str:
        return "toy-quadrants"

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        for _ in range(num_batches):  # each batch drawn anew: any number of full batches
            yield self.train_x[torch.randperm(len(self.train_x), generator=g)[:batch_size]]
