"""The OpenMP wait policy follows the machine: sleeping threads where others keep a core busy."""
from __future__ import annotations

import subprocess
import sys

from zaqbench.run.wait_policy import BUSY_CORES, choose_wait_policy, other_busy_cores


def test_a_shared_machine_gets_sleeping_threads_and_an_idle_one_openmps_default():
    shared: dict[str, str] = {}
    assert choose_wait_policy(shared, busy=BUSY_CORES + 0.5) == "PASSIVE"
    assert shared == {"OMP_WAIT_POLICY": "PASSIVE"}
    idle: dict[str, str] = {}
    assert choose_wait_policy(idle, busy=0.1) is None and idle == {}


def test_the_users_policy_wins():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_wait_policy(env, busy=2.0) == "ACTIVE" and env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_a_busy_process_is_measured_as_load():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        load = other_busy_cores(0.5)
    finally:
        busy.kill()
        busy.wait()
    assert load is not None and load >= BUSY_CORES
