"""The ``zaqbench`` command and ``python -m zaqbench``: every tool as a sub-command."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from zaqbench.run.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("run", "curve", "grid", "tables", "plots", "bench"))


def test_unknown_command_is_one_line(capsys):
    assert main(["nope"]) == 2
    assert capsys.readouterr().err == f"error: unknown command 'nope'; commands: {', '.join(COMMANDS)}\n"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_python_m_zaqbench_runs_a_command_with_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zaqbench", "run", "--task", "nope"], capture_output=True,
                          text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == \
        ["error: unknown task 'nope'; valid tasks: cls, det, seg"]


def test_the_users_wait_policy_is_set_before_torch_starts_and_kept():
    code = ("import os, sys\n"
            "from zaqbench.run.cli import run_command\n"
            "try:\n    run_command('tables', ['--help'])\nexcept SystemExit:\n    pass\n"
            "import torch  # its pool starts after the policy is chosen\n"
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "ACTIVE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stdout.split()[-2:] == ["ACTIVE", "True"]
