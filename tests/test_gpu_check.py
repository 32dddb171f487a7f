"""tools/gpu_check.sh: its --smoke mode runs every step of the GPU check on any machine."""
import csv
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(tmp_path, fmnist_root, *args):
    env = {**os.environ, "ZAQBENCH_DATA": str(fmnist_root), "GPU_CHECK_OUT": str(tmp_path / "out"),
           "GPU_CHECK_WORK": str(tmp_path / "work"), "ZAQBENCH_CACHE_GPU_CHECK": str(tmp_path / "cache"),
           "GPU_CHECK_TASKS": "cls", "OMP_NUM_THREADS": "1", "PY": str(ROOT / ".venv" / "bin" / "python")}
    return subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_runs_benchmark_teacher_and_the_paper_loop(tmp_path, fmnist_root):
    done = gpu_check(tmp_path, fmnist_root, "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"\| fake-quant on \| [0-9.]+ \|", done.stdout)
    planned = int(re.search(r"paper loop for (\d+) iterations", done.stdout).group(1))
    with open(tmp_path / "out" / "cls.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"fp", "ptq", "zaq-official"}
    zaq = rows["zaq-official"]
    assert int(zaq["iters"]) == planned >= 2
    assert zaq["quant_preset"] == "zaq-code" and zaq["wbits"] == "4"
    assert "cfg.act_ranges=every-forward" in zaq["extra_metrics"] and "cfg.relation_guard=safe" in zaq["extra_metrics"]
    assert "cfg.quant.a_placement=after-relu" in zaq["extra_metrics"]
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert zaq["device"].startswith(expected)
    assert list((tmp_path / "cache" / "teachers").glob("cls-resnet20-*.pth"))  # trained here, not shared


@pytest.mark.slow
def test_full_mode_needs_a_gpu_or_says_so(tmp_path, fmnist_root):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the full check would run, not refuse")
    done = gpu_check(tmp_path, fmnist_root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no CUDA device is available here; tools/gpu_check.sh --smoke runs the same steps on the CPU"]
    assert not (tmp_path / "out").exists()


def test_unknown_option_is_one_line(tmp_path, fmnist_root):
    done = gpu_check(tmp_path, fmnist_root, "--fast")
    assert done.returncode == 2 and done.stderr.startswith("error: unknown option '--fast'")
