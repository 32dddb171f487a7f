"""``zaqbench grid --ray``: the rows of a local grid, each once; a dead worker's job retried; a job's
``error:`` line at the driver; Ctrl-C cancels; bad options and a missing ray are one line."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from zaqbench.run.cli import run_command
from zaqbench.run.ray_grid import RayOptions, connect, run_job
from zaqbench.run.results import append_rows
from tests.toy_task import ToyAdapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module, started as the grid starts its own; its
    workers get the environment below (a cache of their own, the blocking method's marker)."""
    ray = pytest.importorskip("ray")
    folder = tmp_path_factory.mktemp("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"ZAQBENCH_CACHE": folder / "cache", "ZAQBENCH_TEST_BLOCK": folder / "blocked",
                            "PYTHONPATH": ROOT, "OMP_NUM_THREADS": 1, "RAY_USAGE_STATS_ENABLED": 0}.items():
            patch.setenv(name, str(value))
        connect(RayOptions(cpus=2))
    try:
        yield SimpleNamespace(address=ray.get_runtime_context().gcs_address, marker=folder / "blocked")
    finally:
        ray.shutdown()


def toy_configs(tmp_path: Path, config: str = "toy_config.py") -> Path:
    folder = tmp_path / "configs" / "toy"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "toy_config.py", folder / "toy_config.py")  # the others' _base_
    shutil.copy(ROOT / "tests" / "data" / config, folder / "toy.py")
    (folder / "DEFAULT").write_text("toy\n")
    return tmp_path / "configs"


def grid_command(tmp_path: Path, results: str, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / "regenerate.py"), "--tasks", "toy", "--configs",
            str(tmp_path / "configs"), "--results", str(tmp_path / results), "--no-tables", "--no-progress",
            "--work-dir", str(tmp_path / f"work-{results}"), "--bits", "8,4", *extra]


def grid_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ZAQBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_grid(tmp_path: Path, results: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(grid_command(tmp_path, results, *extra), env=grid_env(tmp_path), capture_output=True,
                          text=True, timeout=600)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def cells(path: Path) -> list[tuple[str, str, str]]:
    return sorted((r["method"], r["wbits"], r["seed"]) for r in rows(path))


def wait_for(marker: Path, proc: subprocess.Popen) -> int:
    """The process id the blocking method wrote into ``marker`` once its job runs."""
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), f"the blocking job never ran: {proc.communicate()}"
    time.sleep(0.2)  # the line is written whole
    return int(marker.read_text().split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.subprocess
@pytest.mark.slow
def test_ray_grid_writes_the_rows_of_a_local_grid_once(ray_cluster, tmp_path):
    toy_configs(tmp_path)
    args = ("--methods", "fp,ptq,zaq", "--seeds", "0")  # fp alone (the teacher), then ptq and zaq at once
    local = run_grid(tmp_path, "local", *args)
    assert local.returncode == 0, local.stderr
    on_ray = run_grid(tmp_path, "ray", *args, "--ray", ray_cluster.address)
    assert on_ray.returncode == 0, on_ray.stderr

    def same(row: dict[str, str]) -> tuple:  # all but when and how long
        extra = ";".join(kv for kv in row["extra_metrics"].split(";") if not kv.startswith("shared_seconds="))
        return tuple(extra if k == "extra_metrics" else v for k, v in row.items() if k not in ("seconds", "date"))
    on_ray_rows, local_rows = rows(tmp_path / "ray" / "toy.csv"), rows(tmp_path / "local" / "toy.csv")
    assert sorted(map(same, on_ray_rows)) == sorted(map(same, local_rows))
    assert cells(tmp_path / "ray" / "toy.csv") == sorted([("fp", "32", "0")] + [(m, b, "0") for m in ("ptq", "zaq")
                                                                                 for b in "84"])
    done = [line for line in on_ray.stdout.splitlines() if line.startswith("-- done toy")]
    assert len(done) == 3 and any("zaq seed 0 [W8A8,W4A4]" in line for line in done), on_ray.stdout
    assert sorted(p.name for p in (tmp_path / "ray" / "logs").glob("*.log")) == [
        "toy-0-fp.log", "toy-0-ptq.log", "toy-0-zaq.log"]
    again = run_grid(tmp_path, "ray", *args, "--ray", ray_cluster.address)  # every row is there: none appended
    assert again.returncode == 0, again.stderr
    assert len(rows(tmp_path / "ray" / "toy.csv")) == 5 and again.stdout.count("[no run left]") == 3


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_job_whose_worker_dies_is_retried_and_its_rows_are_written_once(ray_cluster, tmp_path):
    toy_configs(tmp_path, "toy_blocking_config.py")
    ray_cluster.marker.unlink(missing_ok=True)
    proc = subprocess.Popen(grid_command(tmp_path, "results", "--methods", "fp,block", "--seeds", "0",
                                         "--ray", ray_cluster.address),
                            env=grid_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(wait_for(ray_cluster.marker, proc), signal.SIGKILL)  # the worker process, in its job
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "-- retry toy-0-block (attempt 2 of 3)" in out and "attempt 2: 2 row(s)" in out, out
    assert cells(tmp_path / "results" / "toy.csv") == [("block", "4", "0"), ("block", "8", "0"), ("fp", "32", "0")]


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_job_that_fails_is_one_error_line_and_is_not_retried(ray_cluster, tmp_path):
    toy_configs(tmp_path, "toy_blocking_config.py")
    done = run_grid(tmp_path, "results", "--methods", "fp,fail", "--seeds", "0", "--ray", ray_cluster.address)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: toy-0-fail:")]
    assert len(errors) == 1 and "the test method 'fail' stops here" in errors[0], done.stderr
    assert "-- retry" not in done.stdout
    assert cells(tmp_path / "results" / "toy.csv") == [("fp", "32", "0")]
    assert "the test method 'fail' stops here" in (tmp_path / "results" / "logs" / "toy-0-fail.log").read_text()


@pytest.mark.subprocess
@pytest.mark.slow
def test_ctrl_c_cancels_the_running_jobs_and_leaves_whole_rows(ray_cluster, tmp_path):
    toy_configs(tmp_path, "toy_blocking_config.py")
    ray_cluster.marker.unlink(missing_ok=True)
    proc = subprocess.Popen(grid_command(tmp_path, "results", "--methods", "fp,block", "--seeds", "0",
                                         "--ray", ray_cluster.address),
                            env=grid_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = wait_for(ray_cluster.marker, proc)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say how far the driver got: its stderr names each step
        proc.kill()
        pytest.fail(f"the grid did not stop within 120 s of Ctrl-C; its stderr: {proc.communicate()[1]!r}")
    assert proc.returncode == 130 and "rerun the same command to resume it" in err, err
    assert "-- ray: interrupted; cancelling 1 running job(s)" in err, err
    deadline = time.time() + 60
    while alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the cancelled job's worker is still running"
    assert cells(tmp_path / "results" / "toy.csv") == [("fp", "32", "0")]
    assert [p.name for p in (tmp_path / "results").iterdir() if p.name.endswith(".tmp")] == []


def test_a_job_sent_the_teacher_does_not_train_it_and_skips_the_rows_it_is_sent(tmp_path, monkeypatch):
    argv = ["--task", "toy", "--config", str(ROOT / "tests" / "data" / "toy_config.py"), "--method", "ptq",
            "--bits", "4", "--seeds", "0", "--no-progress", "--work-dir", str(tmp_path / "work"), "--skip-existing"]
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "first"))
    first, teacher = run_job(argv, b"", None, 1, None, send_teacher=True)
    assert first.error is None and first.teacher_ready and teacher is not None, first.log
    shared, _ = run_job(argv, b"", None, 1, str(tmp_path / "shared"), send_teacher=False)  # --ray-cache
    assert shared.teacher_ready and (tmp_path / "shared" / "teachers" / teacher[0]).is_file(), shared.log
    assert os.environ["ZAQBENCH_CACHE"] == str(tmp_path / "first")  # the job's setting was put back

    def train_teacher(self, model):
        raise AssertionError("a job sent its teacher trained it again")
    monkeypatch.setattr(ToyAdapter, "train_teacher", train_teacher)
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "second"))
    second, nothing = run_job(argv, b"", teacher, 1, None, send_teacher=False)
    assert second.error is None and "teacher received" in second.log, second.log
    assert (tmp_path / "second" / "teachers" / teacher[0]).is_file() and nothing is None
    assert [(r["value"], r["config_hash"]) for r in second.rows] == [(r["value"], r["config_hash"]) for r in first.rows]
    append_rows(tmp_path / "done.csv", first.rows)
    third, _ = run_job(argv, (tmp_path / "done.csv").read_bytes(), None, 1, None, send_teacher=False)
    assert third.error is None and third.rows == []  # --skip-existing ran against the copy it was sent


def test_importing_the_grid_and_the_command_does_not_import_ray():
    code = "import sys, zaqbench.run.cli, zaqbench.run.grid; assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("extra, message", [
    ((), "--ray needs the 'ray' package, which is not installed; install it with pip install -e '.[ray]'"),
    (("--jobs", "2"), "leave out --jobs"),
    (("--ray-threads", "0"), "--ray-threads must be at least 1"),
    (("--ray-retries", "-1"), "--ray-retries must be 0 or more"),
    (("--ray-cpus", "2", "--ray", "auto"), "only for the local Ray instance"),
    (("--device", "cuda:1"), "use --device cuda"),
    (("closed",), "nothing answers at the Ray address '127.0.0.1:"),
])
def test_bad_ray_options_are_one_line(tmp_path, monkeypatch, capsys, extra, message):
    if not extra:  # ray missing: its import fails
        monkeypatch.setitem(sys.modules, "ray", None)
    if extra == ("closed",):  # a port where nothing listens
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            extra = (f"127.0.0.1:{free.getsockname()[1]}",)
    code = run_command("grid", ["--tasks", "toy", "--results", str(tmp_path / "results"), "--ray", *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "results").exists()
