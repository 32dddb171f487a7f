"""``real-kd``: ZAQ's Q step on real training images, the real-data reference at ZAQ's budget.

Everything but the data is ZAQ's: the loss (D_o + alpha D_f), optimiser, schedule, iterations,
batch size and stabilisers (trust region, proximal pull, anchors), the activation calibration.
There is no generator step, so a ``real-kd`` row differs from a ``zaq`` row only in where Q's
training images come from: what a user with a few real images would do with the same budget.
It is NOT data-free; it bounds what the data-free methods could reach with this training.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from .. import distributed
from .engine import ZAQTrainer

#: offset of the training stream's seed from the run's seed (calibration draws use their own RNG)
TRAIN_STREAM_OFFSET = 3_000_017


class RealDataTrainer(ZAQTrainer):
    """A ZAQ trainer whose batches are real training images and whose generator never trains.

    The training batches are one stream seeded by the run's seed; a draw with another RNG (the
    start's and the end's calibration, anchor images) takes a fresh batch seeded from that RNG, so
    reporting (snapshots) leaves the training stream where it was."""

    name = "real-kd"
    trains_generator = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._train_stream: Iterator[torch.Tensor] | None = None
        self._drawn = 0  # training batches taken so far: a resumed run skips as many
        super().__init__(*args, **kwargs)

    def _stream(self, seed: int, num_batches: int) -> Iterator[torch.Tensor]:
        for x in self.adapter.real_batches(self.cfg.batch_size, num_batches, seed):
            yield distributed.local_rows(x.to(self.device))

    def draw(self, rng: torch.Generator, generator: torch.nn.Module | None = None) -> torch.Tensor:
        if rng is not self.rng:
            seed = int(torch.randint(2**31 - 1, (1,), generator=rng, device=rng.device).item())
            return next(self._stream(seed, 1))
        if self._train_stream is None:
            total = self.cfg.iters * self.cfg.q_steps
            self._train_stream = self._stream(self.seed + TRAIN_STREAM_OFFSET, total)
            for _ in range(self._drawn):  # resumed: continue where the checkpoint stopped
                next(self._train_stream)
        self._drawn += 1
        return next(self._train_stream)

    def calibrate(self, batches: int, model: torch.nn.Module | None = None,
                  rng: torch.Generator | None = None) -> None:
        # the start's calibration draws from an RNG of its own too: the training stream is Q's data
        rng = rng or torch.Generator(device=self.device).manual_seed(self.seed + 4_000_037)
        super().calibrate(batches, model=model, rng=rng)

    def generator_step(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, float]]:
        """No generator: the last Q step's batch and terms stand for the iteration's diagnostics."""
        return torch.zeros((), device=self.device), self._last_x, self._last_d, {}

    def q_updates(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        loss_q, self._last_x, self._last_d = super().q_updates()
        return loss_q, self._last_x, self._last_d

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "real_batches_drawn": self._drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._drawn = int(state["real_batches_drawn"])
        self._train_stream = None
