"""A task registered from outside tasks/ runs end to end through tools/run_task.py."""
import pytest
from tests.conftest import ROOT, run_task_cli


@pytest.mark.slow
def test_toy_task_runs_to_result_rows(tmp_path):
    proc, rows = run_task_cli(tmp_path, ROOT / "tests" / "data" / "toy_config.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["method"] for r in rows] == ["fp", "ptq", "zaq"]
    assert all(r["task"] == "toy" and r["metric"] == "accuracy" for r in rows)
    assert float(rows[0]["value"]) > 60  # the teacher learned the toy problem
    assert (tmp_path / "work" / "toy").is_dir()


@pytest.mark.parametrize("option, message", [("task.width=abc", "task.width='abc' is not valid"),
                                             ("task.arch=resnet", "task.arch='resnet' is not valid")])
def test_the_toy_adapter_checks_its_fields_before_any_work(tmp_path, option, message):
    proc, rows = run_task_cli(tmp_path, ROOT / "tests" / "data" / "toy_config.py", "--cfg-options", option)
    assert proc.returncode == 2 and rows == []
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        line for line in proc.stderr.splitlines() if message in line]
    assert "Traceback" not in proc.stderr
