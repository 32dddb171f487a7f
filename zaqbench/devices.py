"""Which device a run uses: ``--device auto|cpu|cuda|cuda:N``, checked before any work.

``auto`` is the first CUDA device when one is available, else the CPU. Under
``torchrun`` (``LOCAL_RANK`` set) ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``: one
process per device, as the field does it. Bad input is one ``UserError`` line that
names what exists on this machine.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .errors import UserError

SUPPORTED_TYPES = ("cpu", "cuda")


def available_devices(cuda_count: int | None = None) -> list[str]:
    """What this machine offers, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


def _local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def resolve_device(spec: str | None, cuda_count: int | None = None, flag: str = "--device") -> torch.device:
    """``spec`` -> a usable ``torch.device``, or one ``UserError`` naming the devices that exist.

    ``cuda_count``: the number of CUDA devices (default: what torch sees; tests pass their own).
    ``flag``: the option named in the error.
    """
    spec = (spec or "auto").strip().lower()
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    exists = ", ".join(available_devices(count))
    local_rank = _local_rank()
    if spec == "auto":
        spec = "cuda" if count > 0 else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} '{spec}' is not a device; use auto, cpu, cuda or cuda:N "
                        f"(this machine has: {exists})") from None
    if device.type not in SUPPORTED_TYPES:
        raise UserError(f"{flag} '{spec}' is not supported; use auto, cpu, cuda or cuda:N "
                        f"(this machine has: {exists})")
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise UserError(f"{flag} '{spec}': the CPU has no index; use cpu (this machine has: {exists})")
        return torch.device("cpu")
    if count == 0:
        raise UserError(f"{flag} '{spec}' asks for CUDA, but no CUDA device is available "
                        f"(this machine has: {exists}); use --device cpu or auto")
    if device.index is None:
        index = local_rank if local_rank is not None else 0
    elif local_rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"{flag} '{spec}' names one GPU, but torchrun starts one process per GPU; "
                        "use --device cuda or auto (rank i uses cuda:LOCAL_RANK)")
    else:
        index = device.index
    if index >= count:
        what = f"LOCAL_RANK {index}" if device.index is None else f"cuda:{index}"
        raise UserError(f"{flag} '{spec}': {what} does not exist; this machine has: {exists}")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    """The device as recorded in a result row: on the CPU with torch's thread count
    (results move with it), on a GPU with its name."""
    if device.type == "cpu":
        return f"cpu threads={torch.get_num_threads()}"
    return f"{device} {torch.cuda.get_device_name(device)}"


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (a container's or ``taskset``'s
    share), which can be far fewer than the machine's ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity masks
        return os.cpu_count() or 1


def loader_workers(requested: int) -> int:
    """DataLoader worker processes for a config's ``requested`` count, within the cores this
    process has: none on 2 cores or fewer, else at most one fewer than the cores (one stays with
    the model). A worker per core starves the model's own threads: on 2 cores 4 and 8 workers
    were slower than loading in-process, and torch warns about every such loader. The count
    changes only speed, never a result, so a config may ask for what a large machine can feed."""
    cores = usable_cores()
    return 0 if cores <= 2 else min(int(requested), cores - 1)


def loader_options(device: torch.device, workers: int) -> dict[str, Any]:
    """DataLoader keywords for ``workers`` requested processes (:func:`loader_workers` decides how
    many start); on a GPU also pinned memory, so ``.to(device, non_blocking=True)`` is asynchronous."""
    n = loader_workers(workers)
    return {"num_workers": n, "pin_memory": device.type == "cuda", "persistent_workers": n > 0}


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: unchanged), restoring the
    previous count afterwards, so nothing outlives the call."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
