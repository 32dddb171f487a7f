"""Time per step of the cls teacher and of a ZAQ job, quiet and beside one busy process.

    zaqbench contention --steps 8 --repeats 2

Two cores are easily oversubscribed: OpenMP threads that spin while they wait for a core that
another process holds stall every parallel region. Each arm runs in its own process with its own
thread count and wait policy (``ACTIVE``: always spin; ``PASSIVE``: always sleep; ``default``: the
suite's choice, :mod:`zaqbench.run.wait_policy`), with and without one competing single-threaded
busy process, interleaved so machine noise hits every arm alike. The wait policy changes no
number, only when threads sleep.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError
from ..options import check_value, non_negative_int, positive_int
from .args import OneLineParser
from .results import append_rows, check_writable, git_commit, now_iso

WORKLOADS = ("teacher", "zaq")
#: (threads, wait policy): one thread, then two spinning, sleeping, and as the suite chooses
ARMS = ((1, "default"), (2, "ACTIVE"), (2, "PASSIVE"), (2, "default"))
LOADS = ("quiet", "busy")
COLUMNS = ["date", "commit", "cpu", "cores", "workload", "load", "threads", "wait_policy", "steps", "s_per_step"]
BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def step_function(workload: str, batch_size: int) -> Iterator[Callable[[], None]]:
    """A function that runs one step of ``workload`` on the cls default (ResNet-20, Fashion-MNIST
    shapes), on a freshly initialised model: speed does not depend on trained weights. A context
    manager, so the ZAQ trainer's temporary folder is removed when the arm ends."""
    import torch
    from torch import nn

    import tasks  # noqa: F401 - registers the adapters
    import zaqbench.methods  # noqa: F401 - registers the methods

    from .bench import bench_trainer

    torch.manual_seed(0)
    args = argparse.Namespace(task="cls", model="resnet20", bits=4, batch_size=batch_size, q_steps=5, warmup=0,
                              iters=100, device="cpu", cfg_options=[])
    with bench_trainer(args) as trainer:  # the adapter's own model and input shape
        if workload == "zaq":
            yield trainer.step
            return
        model, spec = trainer.teacher, trainer.adapter.input_spec
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(spec.shape(batch_size))
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    yield step


def child(workload: str, threads: int, steps: int, batch_size: int) -> float:
    """Median seconds per step after one untimed step."""
    import torch

    torch.set_num_threads(threads)
    with step_function(workload, batch_size) as step:
        step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_arm(workload: str, threads: int, policy: str, steps: int, batch_size: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({"OMP_NUM_THREADS": str(threads), **({"OMP_WAIT_POLICY": policy} if policy != "default" else {})})
    cmd = [sys.executable, "-m", "zaqbench.run.cli", "contention", "--_child", workload, "--threads", str(threads),
           "--steps", str(steps), "--batch-size", str(batch_size)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"the {workload} arm failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["s_per_step"]


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    for _ in range(args.repeats):
        for load in LOADS:
            busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if load == "busy" else None
            try:
                for workload in WORKLOADS:
                    for threads, policy in ARMS:
                        seconds = run_arm(workload, threads, policy, args.steps, args.batch_size[workload])
                        print(f"-- {workload} {load} threads={threads} {policy}: {seconds:.3f} s/step", flush=True)
                        rows.append({"date": now_iso(),
                                     "commit": git_commit(), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
                                     "workload": workload, "load": load, "threads": threads, "wait_policy": policy,
                                     "steps": args.steps, "s_per_step": round(seconds, 4)})
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return rows


def summary(rows: list[dict]) -> str:
    """Best (smallest) time per arm, and the ratios the suite's default is judged by."""
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["workload"], r["load"], r["threads"], r["wait_policy"])
        best[key] = min(best.get(key, float("inf")), r["s_per_step"])
    lines = ["| workload | load | 1 thread | 2 threads ACTIVE | 2 threads PASSIVE | 2 threads, the suite's choice "
             "| choice / 1 thread | choice / ACTIVE |", "|---|---|---|---|---|---|---|---|"]
    for workload in WORKLOADS:
        for load in LOADS:
            one, active, passive, chosen = (best[(workload, load, t, p)] for t, p in ARMS)
            lines.append(f"| {workload} | {load} | {one:.3f} | {active:.3f} | {passive:.3f} | {chosen:.3f} "
                         f"| {chosen / one:.2f}x | {chosen / active:.2f}x |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="zaqbench contention", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed steps per arm (the median is kept)")
    p.add_argument("--repeats", type=int, default=2, help="rounds over every arm; the best is kept")
    p.add_argument("--out", type=Path, default=None, help="CSV the rows are appended to (default: none)")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_child", choices=WORKLOADS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_value(positive_int, args.steps, "--steps")
        check_value(positive_int, args.repeats, "--repeats")
        check_value(non_negative_int, args.threads, "--threads")
        if args._child:
            print(json.dumps({"s_per_step": child(args._child, args.threads, args.steps, args.batch_size)}))
            return 0
        # the teacher's batch and the cls default's ZAQ batch (configs/cls/resnet20.py)
        args.batch_size = {"teacher": 128, "zaq": 32}
        if args.out is not None:
            check_writable(args.out, COLUMNS)
        rows = measure(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(rows))
    if args.out is not None:
        append_rows(args.out, rows, COLUMNS)  # locked and atomic, like every results CSV
    return 0
