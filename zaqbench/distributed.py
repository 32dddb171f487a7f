"""Data-parallel runs under ``torchrun``: one process per device, as the field does it.

``torchrun --nproc-per-node N tools/run_task.py ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`init_from_env` joins the process
group (gloo on the CPU, nccl on CUDA). Every helper here is also correct without a
process group (one process, world size 1), so the core calls them unconditionally.

Conventions the rest of the code relies on:

* the global batch is the config's ``batch_size``; rank r computes rows
  ``[r * n / W, (r + 1) * n / W)`` of it (:func:`local_slice`);
* gradients are averaged over ranks (DistributedDataParallel), so a loss that is a
  mean over the local rows gives the gradient of the mean over the global batch;
* statistics over the whole batch (BatchNorm, the BN-statistics prior) are reduced
  with a differentiable all-reduce (:func:`batch_moments`);
* only rank 0 writes files (:func:`is_main`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError

T = TypeVar("T")


def env_world_size() -> int:
    """The world size torchrun announced (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device, timeout_s: float = 1800) -> bool:
    """Join the process group torchrun describes; True if this is a multi-process run.

    Idempotent. The backend follows the device: nccl for CUDA tensors, gloo for CPU ones.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    return True


def shutdown(synchronize: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others: gloo
    aborts a process ("terminate called without an active exception") when a peer tears the
    group down while its own threads still use it. After a failure there is no wait, since a
    barrier could match another rank's pending collective and hang."""
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, logs and result rows."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. trains and caches the teacher), the others after."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def local_batch(global_batch: int, what: str = "batch_size") -> int:
    """This rank's share of a global batch; the world size must divide it."""
    w = world_size()
    if w > global_batch or global_batch % w:
        raise UserError(f"{what}={global_batch} cannot be split over {w} processes; the global batch must be "
                        f"a multiple of the number of processes (torchrun --nproc-per-node)")
    return global_batch // w


def local_slice(global_batch: int) -> slice:
    """Rows of the global batch this rank computes."""
    n = local_batch(global_batch)
    return slice(rank() * n, (rank() + 1) * n)


def local_rows(x: torch.Tensor, what: str = "batch") -> torch.Tensor:
    """This rank's rows of a whole batch ``x`` (N, ...); N must be a multiple of the world size."""
    if not is_distributed():
        return x
    local_batch(x.shape[0], what)
    return x[local_slice(x.shape[0])]


def shard(items: Iterable[T]) -> Iterator[T]:
    """Every W-th item, starting at this rank's: whole batches go to one rank each, so a
    sample is computed in the same batch, hence bit for bit the same, as in one process."""
    w, r = world_size(), rank()
    for i, item in enumerate(items):
        if i % w == r:
            yield item


def all_sum(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """Element-wise sums over ranks (float64: integer counts stay exact)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device or _comm_device())
    dist.all_reduce(t)
    return t.tolist()


def all_mean(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    return [v / world_size() for v in all_sum(values, device)]


def _comm_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@torch.no_grad()
def reduce_min_max(lo: torch.Tensor, hi: torch.Tensor) -> None:
    """In place: ``lo`` = min over ranks, ``hi`` = max over ranks. A rank that saw nothing
    holds +inf / -inf, which the reduction ignores."""
    if not is_distributed():
        return
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)


def batch_moments(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over ``dims`` of the *global* batch, differentiable.

    One process: ``x.mean`` / ``x.var`` as before. Several: two-pass sums reduced over ranks
    with :class:`_SumOverRanks`.
    """
    if not is_distributed():
        return x.mean(dim=dims), x.var(dim=dims, unbiased=False)
    all_reduce = _SumOverRanks.apply
    count = 1
    for d in dims:
        count *= x.shape[d]
    total = count * world_size()
    mean = all_reduce(x.sum(dim=dims)) / total
    shape = [1 if d in dims else s for d, s in enumerate(x.shape)]
    var = all_reduce(((x - mean.reshape(shape)) ** 2).sum(dim=dims)) / total
    return mean, var


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward also sums the gradients over ranks.

    Every rank computes its loss from the same reduced value, so the gradient reaching the
    value is the sum of the ranks' gradients; after DDP divides by the world size, each
    rank's parameters get exactly the gradient of the mean of the ranks' losses.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch.

    ``torch.nn.SyncBatchNorm`` does this on GPUs only; this one works on any backend
    (gloo on the CPU, nccl on CUDA), so the same code path is tested on the CPU. With one
    process, or in eval mode, it is ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        mean, var = batch_moments(x, [0, 2, 3])
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                n = x.numel() // x.shape[1] * world_size()
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / max(1, n - 1), momentum)
                self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` of ``model`` (in place) for :class:`GlobalBatchNorm2d`,
    adopting its parameters and buffers (same ``state_dict`` keys). A no-op in one process."""
    if not is_distributed():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                g = GlobalBatchNorm2d.__new__(GlobalBatchNorm2d)
                g.__dict__.update(child.__dict__)
                setattr(parent, name, g)
    return model


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged over ranks); itself in one process.

    Buffers (BN statistics, activation ranges) are not re-broadcast from rank 0 at each forward:
    they are equal on every rank by construction (global-batch BN, reduced ranges).
    """
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **_no_buffer_sync())


def _no_buffer_sync() -> dict[str, bool]:
    """``broadcast_buffers`` is deprecated in newer torch for ``forward_sync_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
