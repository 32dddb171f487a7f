"""The grid on a Ray cluster: ``zaqbench grid --ray [ADDRESS]`` (docs/ray.md).

Each grid job (one task, seed and method, all bit widths) is one Ray task that asks for
``--ray-threads`` CPUs (and one GPU when the jobs run on ``--device cuda``) and runs in a worker
process of its own (``max_calls=1``: no state of one job reaches the next). The worker plans the
job against a copy of the task's results CSV, so ``--skip-existing`` and ``--resume`` see what the
driver's file holds, and returns its rows and its output. The driver appends the rows through the
locked, atomic append of a local run, leaving out any row the file already has, and writes the
output to ``<results>/logs/<job>.log``: workers need no shared filesystem for results.

Teachers: each task's first job runs alone and sends back the teacher it trained (or found in its
cache); Ray's object store carries it to the task's other jobs, which write it into their own
cache before planning, so it is trained once. With ``--ray-cache DIR`` (a folder every worker
sees) the teacher goes through that folder instead. A first job with nothing to run (its rows are
there) hands the turn to the task's next job.

Faults: a job whose worker process or node dies is submitted again, at most ``--ray-retries``
times, and each retry is reported (Ray's own ``max_retries`` is 0, so that the driver can say
so); a job that stops with an error (a ``UserError``: its ``error:`` line) is reported and not
retried, and no new job starts after it. Ctrl-C cancels the running jobs (their rows never reach
the CSV; finished jobs' rows are appended whole).

``ray`` is imported only here, and only when ``--ray`` is given. Importing this module imports no
torch, so that a worker chooses the OpenMP wait policy (``zaqbench.run.wait_policy``) first.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Iterator, TextIO

from ..errors import UserError
from .results import append_rows
from .wait_policy import choose_wait_policy

#: the checkout (configs inside it travel as paths relative to it)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the local instance's object store: teachers and CSV copies are small; more spills to disk
OBJECT_STORE_BYTES = 256 * 1024**2
INSTALL_HINT = "pip install -e '.[ray]' (make setup installs it into .venv)"

#: a teacher file as it travels: (its name in the cache's teachers/ folder, its bytes)
TeacherFile = tuple[str, bytes]


def import_ray() -> Any:
    """The ``ray`` module, or one ``UserError`` line saying how to install it."""
    try:
        return import_module("ray")
    except ImportError:
        raise UserError(f"--ray needs the 'ray' package, which is not installed; install it with "
                        f"{INSTALL_HINT}") from None


@dataclass(frozen=True)
class RayOptions:
    """How the grid uses Ray: where (``address`` None starts a local instance of ``cpus`` CPUs),
    what each job asks for, how often a dead worker's job is retried, and a shared cache."""

    address: str | None = None
    cpus: int | None = None
    threads: int = 1
    retries: int = 2
    cache: str | None = None
    gpu: bool = False


def device_option(passthrough: list[str]) -> tuple[str | None, list[str]]:
    """(the ``--device`` value among ``passthrough``, the other arguments)."""
    rest, device, items = [], None, iter(passthrough)
    for item in items:
        if item == "--device":
            device = next(items, "")
        elif item.startswith("--device="):
            device = item.split("=", 1)[1]
        else:
            rest.append(item)
    return device, rest


def parse_options(args: Any, passthrough: list[str]) -> RayOptions:
    """Check the ``--ray*`` options against each other and the grid's; ``ray`` must import."""
    if args.jobs != 1 or args.devices:
        raise UserError("--ray runs as many jobs as the Ray cluster's CPUs and GPUs allow; leave out --jobs and "
                        "--devices (--ray-threads sets each job's CPUs)")
    if args.ray_threads < 1:
        raise UserError(f"--ray-threads must be at least 1, got {args.ray_threads}")
    if args.ray_retries < 0:
        raise UserError(f"--ray-retries must be 0 or more, got {args.ray_retries}")
    address = None if args.ray == "local" else args.ray
    if args.ray_cpus is not None and (address is not None or args.ray_cpus < 1):
        raise UserError(f"--ray-cpus {args.ray_cpus}: give a positive number of CPUs, and only for the local Ray "
                        "instance (--ray without an address); a cluster's nodes declare their own CPUs")
    device, _ = device_option(passthrough)
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device} does not apply under --ray, where Ray gives each job its GPU; use "
                        "--device cuda (one GPU per job) or --device cpu (the default under --ray)")
    import_ray()
    if address is not None:
        check_reachable(address)
    cache = str(Path(args.ray_cache).absolute()) if args.ray_cache else None  # read on the workers
    return RayOptions(address, args.ray_cpus, args.ray_threads, args.ray_retries, cache, gpu=device == "cuda")


def check_reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing accepts a connection is one line at
    once: Ray would keep retrying for minutes. Other addresses (``auto``) are Ray's to find."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise UserError(f"nothing answers at the Ray address '{address}' ({err.strerror or err}); start the "
                        "cluster's head there ('ray start --head', docs/ray.md), or use --ray alone for a local "
                        "instance") from None


def job_argv(command: list[str], options: RayOptions) -> tuple[str, ...]:
    """A grid job's ``tools/run_task.py`` command as a Ray worker runs it: no interpreter, script or
    ``--out`` (the worker writes to a copy of the CSV); a config inside this checkout relative to it
    (each machine reads its own checkout); the device the job asked Ray for (a job without a GPU
    runs on the CPU: Ray leaves the node's GPUs visible to it)."""
    _, args = device_option(command[2:])
    at = args.index("--out")
    del args[at:at + 2]
    at = args.index("--config") + 1
    config = Path(args[at]).resolve()
    args[at] = config.relative_to(REPO_ROOT).as_posix() if config.is_relative_to(REPO_ROOT) else str(config)
    return (*args, "--skip-existing", "--resume", "--device", "cuda" if options.gpu else "cpu")


@dataclass(frozen=True)
class GridJob:
    """One grid job: ``argv`` is its ``tools/run_task.py`` arguments less ``--out``; its rows go to ``out``."""

    task: str
    seed: str
    methods: str
    argv: tuple[str, ...]
    out: Path

    @property
    def name(self) -> str:
        return "-".join((self.task, self.seed, self.methods)).replace("/", "_")


@dataclass
class JobOutcome:
    """What a worker sends back: the rows the job computed, its output, where and how long it ran,
    the ``error`` it stopped with (none if it finished), and whether the task's teacher is now in
    the worker's cache (the second return value carries it when the driver asked for it)."""

    rows: list[dict[str, Any]]
    log: str
    seconds: float
    node: str
    error: str | None = None
    teacher_ready: bool = False


# ----------------------------------------------------------------------------------------------
# The worker side


@contextlib.contextmanager
def captured(log: TextIO) -> Iterator[None]:
    """Send this process's output to ``log``: Python's ``sys.stdout``/``sys.stderr`` and the file
    descriptors 1 and 2 (what C code and loggers made before the job write to)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        log.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


@contextlib.contextmanager
def job_settings(threads: int, cache: str | None) -> Iterator[None]:
    """torch's thread count and ``$ZAQBENCH_CACHE`` for one job, put back afterwards."""
    import torch

    before_threads, before_cache = torch.get_num_threads(), os.environ.get("ZAQBENCH_CACHE")
    torch.set_num_threads(threads)
    if cache is not None:
        os.environ["ZAQBENCH_CACHE"] = cache
    try:
        yield
    finally:
        torch.set_num_threads(before_threads)
        if cache is not None:
            if before_cache is None:
                os.environ.pop("ZAQBENCH_CACHE", None)
            else:
                os.environ["ZAQBENCH_CACHE"] = before_cache


def run_job(argv: list[str], csv_bytes: bytes, teacher: TeacherFile | None, threads: int,
            cache: str | None, send_teacher: bool) -> tuple[JobOutcome, TeacherFile | None]:
    """Run one grid job in this process (a Ray worker) against a copy of its results CSV
    (``csv_bytes``); returns its outcome and, if ``send_teacher``, the task's teacher file."""
    if "torch" not in sys.modules:  # a fresh worker: the zaqbench command's OpenMP setting
        choose_wait_policy()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    error, teacher_out, ready = None, None, False
    with tempfile.TemporaryDirectory(prefix="zaqbench-job-") as tmp:
        out, log_path = Path(tmp) / "results.csv", Path(tmp) / "job.log"
        if csv_bytes:
            out.write_bytes(csv_bytes)
        with open(log_path, "w", buffering=1) as log, captured(log), job_settings(threads, cache):
            try:
                rows, ready, teacher_out = plan_and_run([*argv, "--out", str(out)], teacher, send_teacher)
            except UserError as err:
                error = str(err)
                print(f"error: {err}", file=sys.stderr)
            except SystemExit as err:  # the runner's parser refused an argument (it printed why)
                error = f"tools/run_task.py refused the job's arguments (exit status {err.code}); see the log"
            except Exception as err:  # noqa: BLE001 - any failure is the job's, reported to the driver
                traceback.print_exc()
                error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        outcome = JobOutcome(rows, log_path.read_text(errors="replace"), time.perf_counter() - start,
                             socket.gethostname(), error, ready)
    return outcome, teacher_out


def plan_and_run(argv: list[str], teacher: TeacherFile | None,
                 send_teacher: bool) -> tuple[list[dict[str, Any]], bool, TeacherFile | None]:
    """(the rows, whether the teacher is cached here, the teacher file if ``send_teacher``)."""
    import torch

    from ..checkpoint import atomic_save
    from .cli import BUILTINS
    from .runner import build_parser, build_plan, run_rows
    from .teacher import teacher_cache_path

    for package in BUILTINS:
        import_module(package)
    at = argv.index("--config") + 1
    argv = [*argv[:at], str(REPO_ROOT / argv[at]), *argv[at + 1:]]  # relative: a config of this checkout
    args = build_parser().parse_args(argv)
    plan = build_plan(args)
    if args.checkpoint:  # the user's weights: no teacher to train or send
        return run_rows(args, plan), True, None
    path = teacher_cache_path(plan.adapter, plan.cache_dir, args.task)
    if teacher is not None and not path.exists():
        name, data = teacher
        if name == path.name:  # the same teacher key: the same teacher
            atomic_save(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), path)
            print(f"[zaqbench] teacher received from the task's first job: {path}", file=sys.stderr)
        else:
            print(f"warning: the teacher sent ({name}) is not this job's ({path.name}); training it here",
                  file=sys.stderr)
    rows = run_rows(args, plan)
    ready = path.exists()
    return rows, ready, (path.name, path.read_bytes()) if ready and send_teacher else None


# ----------------------------------------------------------------------------------------------
# The driver side


def connect(options: RayOptions) -> bool:
    """Start a local Ray instance or join ``options.address``; True if this call started one
    (the caller shuts it down). Job output comes back in each job's log, not through Ray's."""
    ray = import_ray()
    common = dict(log_to_driver=False, logging_level=logging.ERROR)
    if options.address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a local run
        ray.init(address="local", num_cpus=options.cpus or os.cpu_count() or 1,
                 object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, **common)
        return True
    try:
        ray.init(address=options.address, **common)
    except Exception as err:  # noqa: BLE001 - unreachable address, refused token, version mismatch
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot join the Ray cluster at '{options.address}': {reason}; "
                        "start its head with 'ray start --head' (docs/ray.md), or use --ray alone for a "
                        "local instance") from None
    return False


def check_resources(ray: Any, options: RayOptions) -> None:
    """Some node must fit one job (its CPUs, and a GPU for cuda jobs): Ray would wait forever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not any(n.get("CPU", 0) >= options.threads and (not options.gpu or n.get("GPU", 0) >= 1) for n in nodes):
        need = f"{options.threads} CPU(s)" + (" and a GPU" if options.gpu else "")
        have = "; ".join(f"{n.get('CPU', 0):g} CPU(s), {n.get('GPU', 0):g} GPU(s)" for n in nodes) or "no node"
        raise UserError(f"no node of the Ray cluster has {need} for a job (nodes: {have}); lower --ray-threads, "
                        "or add such a node")


@dataclass
class Flight:
    """A submitted job: its attempt number, whether it runs alone for its task's teacher, and
    the reference to the teacher it returns."""

    job: GridJob
    attempt: int
    first: bool
    teacher_ref: Any


@dataclass
class Scheduler:
    """Submits the jobs as Ray tasks, at most as many at once as the cluster fits, each task's
    first job alone; appends the rows that come back and reports each job on one line."""

    ray: Any
    jobs: list[GridJob]
    options: RayOptions
    logs: Path
    queues: dict[str, deque[GridJob]] = field(default_factory=dict)
    teachers: dict[str, Any] = field(default_factory=dict)  # task -> its teacher's object ref (or None)
    in_flight: dict[Any, Flight] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for job in self.jobs:
            self.queues.setdefault(job.task, deque()).append(job)
        self.remote = self.ray.remote(max_calls=1, max_retries=0, num_returns=2)(run_job).options(
            num_cpus=self.options.threads, num_gpus=1 if self.options.gpu else 0)

    def capacity(self) -> int:
        """Jobs the cluster runs at once (its CPUs over each job's, and its GPUs for cuda jobs)."""
        resources = self.ray.cluster_resources()
        slots = int(resources.get("CPU", 0) // self.options.threads)
        if self.options.gpu:
            slots = min(slots, int(resources.get("GPU", 0)))
        return max(1, slots)

    def submit(self, job: GridJob, attempt: int, first: bool) -> None:
        csv_bytes = job.out.read_bytes() if job.out.is_file() else b""  # what --skip-existing compares with
        teacher = None if first else self.teachers.get(job.task)
        result, teacher_ref = self.remote.remote(list(job.argv), csv_bytes, teacher, self.options.threads,
                                                 self.options.cache, first and self.options.cache is None)
        self.in_flight[result] = Flight(job, attempt, first, teacher_ref)

    def fill(self) -> None:
        """Start what may start: a task without its teacher runs one job at a time."""
        if self.failed:
            return
        capacity = self.capacity()
        busy = {flight.job.task for flight in self.in_flight.values() if flight.first}
        for task, queue in self.queues.items():
            if task not in self.teachers and task not in busy and queue and len(self.in_flight) < capacity:
                self.submit(queue.popleft(), 1, first=True)
        for task, queue in self.queues.items():
            while task in self.teachers and queue and len(self.in_flight) < capacity:
                self.submit(queue.popleft(), 1, first=False)

    def run(self) -> int:
        print(f"-- ray: {len(self.jobs)} job(s), up to {self.capacity()} at once "
              f"({self.options.threads} CPU(s){' and a GPU' if self.options.gpu else ''} each)", flush=True)
        start = time.perf_counter()
        try:
            self.fill()
            while self.in_flight:
                ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    self.finish(ref, self.in_flight.pop(ref))
                self.fill()
        except KeyboardInterrupt:
            print(f"-- ray: interrupted; cancelling {len(self.in_flight)} running job(s)", file=sys.stderr, flush=True)
            for ref in self.in_flight:  # force: the worker process exits, and with it the job
                with contextlib.suppress(Exception):  # a cluster already gone has nothing left to cancel
                    self.ray.cancel(ref, force=True)
            raise
        print(f"-- ray: jobs done in {time.perf_counter() - start:.1f}s", flush=True)
        left = sum(len(queue) for queue in self.queues.values())
        if self.failed:
            print(f"error: {len(self.failed)} job(s) failed ({', '.join(self.failed)})"
                  + (f", {left} not started" if left else "") + "; rerun to continue", file=sys.stderr)
            return 1
        return 0

    def finish(self, ref: Any, flight: Flight) -> None:
        job = flight.job
        try:
            outcome: JobOutcome = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as err:  # the job's code failed outside its own handling
            self.fail(job, f"{type(err.cause).__name__ if err.cause else 'error'}: {str(err.cause or err).strip()}")
            return
        except self.ray.exceptions.RayError as err:  # its worker process or node died
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if flight.attempt <= self.options.retries:
                print(f"-- retry {job.name} (attempt {flight.attempt + 1} of {self.options.retries + 1}): "
                      f"its worker stopped: {reason}", flush=True)
                self.submit(job, flight.attempt + 1, flight.first)
            else:
                self.fail(job, f"its worker stopped {flight.attempt} time(s), the last: {reason}")
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{job.name}.log"
        log.write_text(outcome.log)
        if outcome.error:
            self.fail(job, f"{outcome.error} (log: {log})")
            return
        from .runner import row_key

        appended = append_rows(job.out, outcome.rows, key=row_key) if outcome.rows else []
        with open(log, "a") as f:  # the worker's CSV was a copy: say where the rows went
            f.write(f"[zaqbench] the grid's driver appended {len(appended)} row(s) to {job.out}\n")
        bits = ",".join(dict.fromkeys(f"W{r['wbits']}A{r['abits']}" for r in outcome.rows)) or "no run left"
        retried = f", attempt {flight.attempt}" if flight.attempt > 1 else ""
        print(f"-- done {job.task} {job.methods} seed {job.seed} [{bits}] {outcome.seconds:.1f}s on {outcome.node}"
              f"{retried}: {len(appended)} row(s) -> {job.out}", flush=True)
        if flight.first and outcome.teacher_ready:
            self.teachers[job.task] = flight.teacher_ref if self.options.cache is None else None

    def fail(self, job: GridJob, message: str) -> None:
        print(f"error: {job.name}: {message}", file=sys.stderr, flush=True)
        self.failed.append(job.name)


def run_grid(jobs: list[GridJob], options: RayOptions, logs: Path) -> int:
    """Run ``jobs`` on Ray; the exit status (2: bad input found once Ray is up, before any job)."""
    ray = import_ray()
    started = connect(options)
    try:
        check_resources(ray, options)
        return Scheduler(ray, jobs, options, logs).run()
    finally:
        if started:
            ray.shutdown()
