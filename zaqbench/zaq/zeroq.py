"""ZeroQ's distilled data (Cai et al., CVPR 2020).

Random inputs are optimised so that, at every BatchNorm layer of the
full-precision model, the batch mean and standard deviation of the layer's
input match the running statistics stored in the layer. The result is a
calibration batch that needs no real data.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..adapter import TaskAdapter
from .. import distributed
from ..distributed import batch_moments
from ..errors import UserError
from ..progress import track


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


@contextmanager
def bn_statistics_terms(model: nn.Module, global_batch: bool = False) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``model`` appends, per BN layer, the term
    ||mu_batch - mu_run||_2 + ||sigma_batch - sigma_run||_2 of that layer's input.
    The hooks are removed on exit, whatever happens.

    ``global_batch``: under torchrun, the batch statistics are those of all ranks' rows
    together (the ZAQ loop and ZeroQ's distillation, where each rank holds its rows of one
    batch); without it each process's batch stands alone (GDFQ, which is not data-parallel)."""
    terms: list[torch.Tensor] = []

    def hook(module, inputs):
        feat = inputs[0]
        dims = [d for d in range(feat.dim()) if d != 1]
        if global_batch:
            mean, var = batch_moments(feat, dims)
        else:
            mean, var = feat.mean(dim=dims), feat.var(dim=dims, unbiased=False)
        std = torch.sqrt(var + module.eps)
        terms.append(torch.norm(mean - module.running_mean, 2)
                     + torch.norm(std - torch.sqrt(module.running_var + module.eps), 2))

    layers = bn_layers(model)
    if not layers:
        raise UserError("the model has no BatchNorm layer with running statistics; "
                        "ZeroQ and the BN-statistics prior need one")
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        yield terms
    finally:
        for h in handles:
            h.remove()


def bn_statistics_loss(model: nn.Module, x: torch.Tensor,
                       forward: Callable[[nn.Module, torch.Tensor], object]) -> torch.Tensor:
    """Sum over BN layers of ||mu_batch - mu_run||_2 + ||sigma_batch - sigma_run||_2,
    plus the same for the input against N(0, 1) (the normalised data's statistics).
    Under torchrun ``x`` is this rank's rows of one batch, and the statistics are the batch's."""
    dist = distributed.is_distributed()
    with bn_statistics_terms(model, global_batch=dist) as terms:
        forward(model, x)
    dims = [0, 2, 3]
    if dist:
        mean, var = batch_moments(x, dims)
        n = x.numel() // x.shape[1] * distributed.world_size()
        input_term = torch.norm(mean, 2) + torch.norm(torch.sqrt(var * n / (n - 1)) - 1, 2)
    else:
        input_term = torch.norm(x.mean(dim=dims), 2) + torch.norm(x.std(dim=dims) - 1, 2)
    return torch.stack(terms).sum() + input_term


def distill_batch(adapter: TaskAdapter, teacher: nn.Module, batch_size: int, iters: int, lr: float,
                  rng: torch.Generator | None, progress: bool = True,
                  init: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """One distilled batch of shape ``adapter.input_spec.shape(batch_size)`` and its loss curve.

    Starts from ``init`` if given, else from N(0, 1) drawn with ``rng``. Only the inputs are
    optimised: gradients go to ``x`` alone, the teacher's weights get none.
    """
    teacher.eval()
    if init is None:
        init = torch.randn(adapter.input_spec.shape(batch_size), generator=rng, device=adapter.device)
    x = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=max(1, iters // 10))
    curve = []
    for _ in track(range(iters), iters, "zeroq distill", progress, what="iterations"):
        loss = bn_statistics_loss(teacher, x, adapter.forward_raw)
        optimizer.zero_grad(set_to_none=True)
        # under torchrun every rank holds the same loss, and the reductions' backward sums the
        # ranks' identical gradients: divide by W to get the gradient of the one loss
        (loss / distributed.world_size()).backward(inputs=[x])
        optimizer.step()
        scheduler.step(loss.item())
        curve.append(loss.item())
    return x.detach(), curve
