"""A task registered from outside tasks/ runs end to end through tools/run_task.py."""
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_toy_task_runs_to_result_rows(tmp_path):
    out = tmp_path / "toy.csv"
    env = {**os.environ, "ZAQBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_task.py"), "--task", "toy",
         "--config", str(ROOT / "tests" / "data" / "toy_config.py"), "--out", str(out),
         "--work-dir", str(tmp_path / "work"), "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["fp", "ptq", "zaq"]
    assert all(r["task"] == "toy" and r["metric"] == "accuracy" for r in rows)
    assert float(rows[0]["value"]) > 60  # the teacher learned the toy problem
    assert (tmp_path / "work" / "toy").is_dir()
