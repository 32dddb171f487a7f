"""How OpenMP's waiting threads behave, chosen once per command before torch starts its pool.

Spinning threads (OpenMP's usual behaviour) are fastest on an idle machine: a parallel region
starts without a wake-up. Beside another busy process they stall every region while they wait
for the core it holds (2-4x slower per step on 2 cores); sleeping threads (``PASSIVE``) keep
a job near its one-thread time there, but pay a wake-up per region on an idle machine (up to
1.6x slower per ZAQ step). So the policy follows the machine: ``PASSIVE`` when other processes
keep at least half a core busy at start-up, OpenMP's default otherwise. It changes no number
(the arithmetic is the same), only when threads sleep; a user's ``OMP_WAIT_POLICY`` wins.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

BUSY_CORES = 0.5  # other processes' load, in cores, from which waiting threads sleep
SAMPLE_SECONDS = 0.2


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def other_busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores kept busy by other processes over ``seconds`` (this one sleeps meanwhile)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def choose_wait_policy(environ: dict[str, str] | None = None, busy: float | None = None) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (default ``os.environ``) where the machine is
    shared; returns the policy in effect (None: OpenMP's default). ``busy``: the measured load,
    for tests."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ:
        return environ["OMP_WAIT_POLICY"]
    busy = other_busy_cores() if busy is None else busy
    if busy is not None and busy >= BUSY_CORES:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "PASSIVE"
    return None
