"""tools/regenerate.py: parallel grid jobs keep the resumable bookkeeping; bad --devices is one line."""
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def regenerate(tmp_path, *extra):
    env = {**os.environ, "ZAQBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate.py"), "--tasks", "toy",
                           "--configs", str(tmp_path / "configs"), "--results", str(tmp_path / "results"),
                           "--no-tables", *extra], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def toy_configs(tmp_path):
    folder = tmp_path / "configs" / "toy"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "toy_config.py", folder / "toy.py")
    (folder / "DEFAULT").write_text("toy\n")
    return tmp_path


@pytest.mark.slow
def test_parallel_jobs_write_each_cell_once_and_resume(toy_configs):
    tmp = toy_configs
    args = ("--methods", "fp,ptq", "--bits", "8,4", "--seeds", "0,1", "--jobs", "2", "--no-progress")
    done = regenerate(tmp, *args)
    assert done.returncode == 0, done.stderr
    with open(tmp / "results" / "toy.csv") as f:
        rows = list(csv.DictReader(f))
    cells = sorted((r["method"], r["wbits"], r["seed"]) for r in rows)
    assert cells == sorted([("fp", "32", s) for s in "01"] + [("ptq", b, s) for b in "84" for s in "01"])
    assert {r["device"] for r in rows} == {"cpu threads=1"}
    assert sorted(p.name for p in (tmp / "results" / "logs").glob("*.log")) == [
        "toy-0-fp.log", "toy-0-ptq.log", "toy-1-fp.log", "toy-1-ptq.log"]
    again = regenerate(tmp, *args)  # everything is there: nothing runs, nothing is appended
    assert again.returncode == 0, again.stderr
    with open(tmp / "results" / "toy.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


@pytest.mark.parametrize("extra, message", [
    (("--devices", "cuda:99"), "--devices entry 'cuda:99'"),
    (("--devices", "cpu,,cpu"), "empty item"),
    (("--devices", "cpu,cpu"), "repeats cpu"),
    (("--seeds", "0,0"), "--seeds '0,0' repeats 0"),
    (("--bits", "8,9"), "--bits=9 is not valid"),
    (("--task", "toy"), "--task is set by the grid for each run; use --tasks"),
    (("--out", "x.csv"), "use --results"),
    (("--jobs", "0"), "--jobs must be at least 1"),
    (("--jobs", "2", "--devices", "cpu"), "either --jobs"),
    (("--devices", "cpu", "--device", "cpu"), "cannot be combined"),
])
def test_bad_devices_are_one_line(toy_configs, extra, message):
    done = regenerate(toy_configs, *extra)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (toy_configs / "results").exists()
