"""The contention benchmark: its arms, its summary and its bad input."""
from __future__ import annotations

from zaqbench.run.contention import ARMS, LOADS, WORKLOADS, child, main, summary


def test_summary_keeps_the_best_of_each_arm_and_divides_the_default_by_one_thread():
    rows = []
    for workload in WORKLOADS:
        for load in LOADS:
            for threads, policy in ARMS:
                base = {1: 1.0, 2: 0.6}[threads] * (3.0 if (load, policy) == ("busy", "ACTIVE") else 1.0) \
                    * (1.5 if (load, policy) == ("quiet", "PASSIVE") else 1.0)
                for extra in (0.0, 0.5):  # a second, slower round: not the one kept
                    rows.append({"workload": workload, "load": load, "threads": threads, "wait_policy": policy,
                                 "s_per_step": base + extra})
    text = summary(rows)
    assert "| teacher | busy | 1.000 | 1.800 | 0.600 | 0.600 | 0.60x | 0.33x |" in text
    assert "| zaq | quiet | 1.000 | 0.600 | 0.900 | 0.600 | 0.60x | 1.00x |" in text


def test_a_child_times_a_teacher_step():
    import torch

    before = torch.get_num_threads()
    try:
        seconds = child("teacher", 1, 1, 4)
    finally:
        torch.set_num_threads(before)
    assert 0 < seconds < 60


def test_bad_input_is_one_error_line(capsys):
    assert main(["--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --steps") and len(err.strip().splitlines()) == 1
