"""The standard result grid: each task's default model x methods x bit widths x seeds, appended
to ``<results>/<task>.csv`` through ``tools/run_task.py``.

Resumable: every finished run is one atomically appended row keyed by config hash, method, bits
and seed, and runs that already have their row are skipped (``--skip-existing``), so a grid killed
half way continues where it stopped with no duplicated and no lost rows.

Several jobs at once: ``jobs`` grid jobs (one task, seed and method each, all bit widths) as
parallel CPU processes, or one job per device. Rows go to the same CSVs (appends are locked and
atomic), each job's output to ``<results>/logs/``. Each task's first job runs alone, so its teacher
is trained and cached once before the others start. Or on Ray (``--ray [ADDRESS]``): each job a
Ray task on a local instance or a cluster, rows sent back to this process (``zaqbench.run.ray_grid``).

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
from .runner import REPO_ROOT, default_model
from .args import OneLineParser, add_args, parse_bits, parse_names, parse_seeds

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
    names = parse_names(devices, "--devices", "cuda:0,cuda:1")
    resolved = [str(resolve_device(n, flag="--devices entry")) for n in names]  # one line naming what exists if one is missing
    gpus = [d for d in resolved if d != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise UserError(f"--devices '{devices}' names a GPU twice; give each GPU once")
    return resolved


#: run flags the grid sets for each run itself, and what to give the grid instead
GRID_SETS = {"--task": "--tasks", "--model": "--configs (each task's <configs>/<task>/DEFAULT model)",
             "--config": "--configs (each task's <configs>/<task>/DEFAULT model)", "--out": "--results"}


def check_passthrough(passthrough: list[str]) -> None:
    """A flag for every run that the grid sets per run would fight it: one line naming the grid's own."""
    for arg in passthrough:
        flag = arg.split("=", 1)[0]
        if flag in GRID_SETS:
            raise UserError(f"{flag} is set by the grid for each run; use {GRID_SETS[flag]}")


def grid(tasks: list[str], seeds: list[str], methods: list[str]) -> list[Job]:
    return [(t, s, m) for t in tasks for s in seeds for m in methods]


def regenerate(args: argparse.Namespace, passthrough: list[str]) -> int:
    """Run the grid ``args`` describes (the flags of ``tools/regenerate.py``); ``passthrough`` goes
    to every ``tools/run_task.py`` call. Returns the exit status: 2 for bad input, before any work."""
    ray_options = None
    try:
        check_passthrough(passthrough)
        if args.ray is not None:  # ray_grid, and with it ray, only under --ray
            from . import ray_grid

            ray_options = ray_grid.parse_options(args, passthrough)
            workers: list[str] = []
        else:
            workers = parse_devices(args.devices, args.jobs, passthrough)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configs = Path(args.configs)
    try:
        tasks = default_tasks(configs) if args.tasks is None else parse_names(args.tasks, "--tasks", "cls,det")
        seeds = [str(seed) for seed in parse_seeds(args.seeds)]
        parse_bits(args.bits)
        if args.methods is not None:
            parse_names(args.methods, "--methods", "ptq,zaq")
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
                "--config", str(configs / task / f"{models[task]}.py"), "--methods", methods,
                "--bits", args.bits, "--seeds", seed, "--out", str(Path(args.results) / f"{task}.csv"),
                *passthrough]

    for task in tasks:
        for seed in seeds:
            print(f"== {task}/{models[task]} seed {seed}: plan", flush=True)
            plan = command(task, seed, methods) + ["--dry-run"]
            if ray_options is not None:  # the device is the workers' (the plan does not depend on it)
                plan = ray_grid.device_option(plan)[1]
            code = subprocess.call(plan)
            if code:
                return code
    if args.dry_run:
        return 0
    if ray_options is not None:
        jobs = [ray_grid.GridJob(task, seed, method, ray_grid.job_argv(command(task, seed, method), ray_options),
                                 Path(args.results) / f"{task}.csv")
                for task, seed, method in grid(tasks, seeds, methods.split(","))]
        code = ray_grid.run_grid(jobs, ray_options, Path(args.results) / "logs")
    elif len(workers) == 1:  # one job at a time, output streamed as before
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
(CPU processes), ``--devices cuda:0,cuda:1`` or ``--ray [ADDRESS]`` (Ray tasks; docs/ray.md).

    python tools/regenerate.py [--tasks cls,det,seg] [--methods ...] [--bits 8,6,4] [--seeds 0]
                               [--jobs N | --devices cuda:0,cuda:1 | --ray [ADDRESS]]

Other flags go to every ``tools/run_task.py`` call.
"""  # the command's --help


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=MAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, "tasks", "methods", "bits", "seeds", "results", "dry_run",
             tasks=dict(help="comma-separated tasks (default: every task with a default model)"),
             methods=dict(help="comma-separated methods (default: the registered grid methods; --method is the "
                               "same flag)"),
             bits=dict(default="8,6,4", help="comma-separated WbAb widths (default: 8,6,4)"),
             results=dict(default=str(REPO_ROOT / "results"), help="the folder of the <task>.csv files"),
             dry_run=dict(help="only print what would run"))
    p.add_argument("--configs", default=str(REPO_ROOT / "configs"), help="config root holding <task>/DEFAULT")
    p.add_argument("--jobs", type=int, default=1, help="grid jobs run at once as CPU processes")
    p.add_argument("--devices", default=None, help="comma-separated devices, one job on each at a time")
    ray = p.add_argument_group("Ray (docs/ray.md)")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run the jobs as Ray tasks: on a local Ray instance started for the grid (no ADDRESS), "
                          "or on a running cluster ('auto', HOST:PORT of its head, or ray://HOST:PORT)")
    ray.add_argument("--ray-threads", type=int, default=1,
                     help="CPU threads of each job, the CPUs it asks Ray for (default 1); with --device cuda "
                          "a job also asks for one GPU (jobs run on the CPU otherwise)")
    ray.add_argument("--ray-retries", type=int, default=2,
                     help="times a job whose worker process or node died is run again (default 2)")
    ray.add_argument("--ray-cpus", type=int, default=None,
                     help="CPUs of the local Ray instance (default: this machine's)")
    ray.add_argument("--ray-cache", default=None, metavar="DIR",
                     help="a teacher cache folder every worker sees (a shared filesystem): teachers go through "
                          "it instead of Ray's object store")
    p.add_argument("--no-tables", action="store_true", help="do not rerender results/README.md afterwards")
    return p


def main(argv: list[str] | None = None) -> int:
    try:  # flags of its own; the others (--device, --cfg-options...) go to every run
        return regenerate(*build_parser().parse_known_args(argv))
    except KeyboardInterrupt:  # the child runs stop on the same signal and leave no half row
        print("[zaqbench] grid interrupted; rerun the same command to resume it", file=sys.stderr)
        return 130
