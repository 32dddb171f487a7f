"""The standard result grid: each task's default model x methods x bit widths x seeds, appended
to ``<results>/<task>.csv`` through ``tools/run_task.py``.

Resumable: every finished run is one atomically appended row keyed by config hash, method, bits
and seed, and runs that already have their row are skipped (``--skip-existing``), so a grid killed
half way continues where it stopped with no duplicated and no lost rows.

Several jobs at once: ``jobs`` grid jobs (one task, seed and method each, all bit widths) as
parallel CPU processes, or one job per device. Rows go to the same CSVs (appends are locked and
atomic), each job's output to ``<results>/logs/``. Each task's first job runs alone, so its teacher
is trained and cached once before the others start.

The defaults come from the registries: every registered task with a default model
(``<configs>/<task>/DEFAULT``), then any other config folder with one (a task its config registers
through ``custom_imports``); every registered method that runs in the standard grid, in display order.
"""
from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..devices import resolve_device
from ..errors import UserError
from ..registry import TASKS, grid_methods
from ..runner import REPO_ROOT, default_model
from .lists import parse_list

Job = tuple[str, str, str]  # task, seed, comma-separated methods
Command = Callable[[str, str, str], list[str]]
RUN_TASK = REPO_ROOT / "tools" / "run_task.py"
MAKE_TABLES = REPO_ROOT / "tools" / "make_tables.py"


def default_tasks(configs: Path) -> list[str]:
    """Registered tasks with a default model, in registration order, then the other config
    folders that name a default model, by name."""
    marked = {path.parent.name for path in configs.glob("*/DEFAULT")}
    return [t for t in TASKS.module_dict if t in marked] + sorted(marked - set(TASKS.module_dict))


def default_methods() -> str:
    return ",".join(grid_methods())


def parse_devices(devices: str | None, jobs: int, passthrough: list[str]) -> list[str]:
    """One entry per parallel worker: the ``--device`` each of its jobs gets."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if not devices:
        return ["cpu"] * jobs if jobs > 1 else [""]  # "": the runner's own default (auto)
    if jobs != 1:
        raise UserError("give either --jobs (CPU processes) or --devices (one job per device), not both")
    if any(a == "--device" or a.startswith("--device=") for a in passthrough):
        raise UserError("--devices and --device cannot be combined; --devices gives each job its device")
    names = [d.strip() for d in devices.split(",")]
    if not all(names):
        raise UserError(f"--devices '{devices}' has an empty entry; e.g. --devices cuda:0,cuda:1")
    resolved = [str(resolve_device(n, flag="--devices entry")) for n in names]  # one line naming what exists if one is missing
    gpus = [d for d in resolved if d != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise UserError(f"--devices '{devices}' names a GPU twice; give each GPU once")
    return resolved


def grid(tasks: list[str], seeds: list[str], methods: list[str]) -> list[Job]:
    return [(t, s, m) for t in tasks for s in seeds for m in methods]


def regenerate(args: argparse.Namespace, passthrough: list[str]) -> int:
    """Run the grid ``args`` describes (the flags of ``tools/regenerate.py``); ``passthrough`` goes
    to every ``tools/run_task.py`` call. Returns the exit status: 2 for bad input, before any work."""
    try:
        workers = parse_devices(args.devices, args.jobs, passthrough)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configs = Path(args.configs)
    try:
        tasks = default_tasks(configs) if args.task is None else parse_list(args.task, "--task", str, "cls,det")
        seeds = parse_list(args.seeds, "--seeds", str, "0,1,2")
        if args.methods is not None:
            parse_list(args.methods, "--methods", str, "ptq,zaq")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    models = {t: default_model(t, configs) for t in tasks}
    unknown = [t for t, m in models.items() if m is None]
    if unknown:
        valid = sorted(p.parent.name for p in configs.glob("*/DEFAULT"))
        print(f"error: no default model for task(s) {unknown}; tasks with one: {', '.join(valid)}", file=sys.stderr)
        return 2
    methods = default_methods() if args.methods is None else args.methods

    def command(task: str, seed: str, methods: str) -> list[str]:
        return [sys.executable, str(RUN_TASK), "--task", task,
                "--config", str(configs / task / f"{models[task]}.py"), "--method", methods,
                "--bits", args.bits, "--seed", seed, "--out", str(Path(args.results) / f"{task}.csv"),
                *passthrough]

    for task in tasks:
        for seed in seeds:
            print(f"== {task}/{models[task]} seed {seed}: plan", flush=True)
            code = subprocess.call(command(task, seed, methods) + ["--dry-run"])
            if code:
                return code
    if args.dry_run:
        return 0
    if len(workers) == 1:  # one job at a time, output streamed as before
        jobs = [(t, s, methods) for t in tasks for s in seeds]
        code = run_serial(jobs, command, workers[0])
    else:
        code = run_parallel(grid(tasks, seeds, methods.split(",")), command, workers,
                            Path(args.results) / "logs")
    if code:
        return code
    if not args.no_tables:
        return subprocess.call([sys.executable, str(MAKE_TABLES), "--results", args.results])
    return 0


def job_command(command: Command, job: Job, device: str) -> list[str]:
    task, seed, methods = job
    return command(task, seed, methods) + ["--skip-existing", "--resume"] + (["--device", device] if device else [])


def run_serial(jobs: list[Job], command: Command, device: str) -> int:
    for task, seed, methods in jobs:
        code = subprocess.call(job_command(command, (task, seed, methods), device))
        if code:
            print(f"error: {task} seed {seed} stopped with exit code {code}; rerun to continue", file=sys.stderr)
            return code
    return 0


def run_parallel(jobs: list[Job], command: Command, devices: list[str], logs: Path) -> int:
    """Each task's first job alone (it trains and caches the teacher), then the rest on the
    free devices. After a failure no new job starts; the running ones finish."""
    logs.mkdir(parents=True, exist_ok=True)
    free: queue.Queue[str] = queue.Queue()
    for d in devices:
        free.put(d)
    failed: list[str] = []
    lock = threading.Lock()
    env = dict(os.environ)
    if devices[0] == "cpu" and "OMP_NUM_THREADS" not in env:  # processes share the cores, not oversubscribe them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(devices)))

    def one(job: Job) -> None:
        if failed:
            return
        device = free.get()
        name = "-".join(job).replace("/", "_")
        try:
            with open(logs / f"{name}.log", "w") as log:
                print(f"-- start {name} on {device}", flush=True)
                code = subprocess.call(job_command(command, job, device), stdout=log, stderr=subprocess.STDOUT,
                                       env=env)
            with lock:
                print(f"-- {'done' if code == 0 else f'FAILED ({code})'} {name}"
                      + ("" if code == 0 else f"; see {logs / (name + '.log')}"), flush=True)
                if code:
                    failed.append(name)
        finally:
            free.put(device)

    firsts = {}
    for job in jobs:
        firsts.setdefault(job[0], job)
    for job in firsts.values():
        one(job)
    rest = [j for j in jobs if j not in firsts.values()]
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        list(pool.map(one, rest))
    if failed:
        print(f"error: {len(failed)} job(s) failed ({', '.join(failed)}); rerun to continue", file=sys.stderr)
        return 1
    return 0


MAIN_DOC = """Regenerate the standard result grid: each task's default model x methods x {W8A8, W6A6, W4A4}
x seeds, appended to ``results/<task>.csv``; resumable, and several jobs at once with ``--jobs N``
(CPU processes) or ``--devices cuda:0,cuda:1`` (``zaqbench.run.grid`` says how).

    python tools/regenerate.py [--task cls,det,seg] [--methods ...] [--bits 8,6,4] [--seeds 0]
                               [--jobs N | --devices cuda:0,cuda:1]

Other flags go to every ``tools/run_task.py`` call.
"""  # the command's --help


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=MAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # --device (passed through) is not --devices
    p.add_argument("--task", default=None, help="comma-separated tasks (default: every task with a default model)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the registered grid methods)")
    p.add_argument("--bits", default="8,6,4")
    p.add_argument("--seeds", default="0")
    p.add_argument("--results", default=str(REPO_ROOT / "results"))
    p.add_argument("--configs", default=str(REPO_ROOT / "configs"), help="config root holding <task>/DEFAULT")
    p.add_argument("--jobs", type=int, default=1, help="grid jobs run at once as CPU processes")
    p.add_argument("--devices", default=None, help="comma-separated devices, one job on each at a time")
    p.add_argument("--dry-run", action="store_true", help="only print what would run")
    p.add_argument("--no-tables", action="store_true", help="do not rerender results/README.md afterwards")
    try:
        return regenerate(*p.parse_known_args(argv))
    except KeyboardInterrupt:  # the child runs stop on the same signal and leave no half row
        print("[zaqbench] grid interrupted; rerun the same command to resume it", file=sys.stderr)
        return 130

