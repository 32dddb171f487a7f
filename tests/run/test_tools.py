"""tools/: resumable regeneration after SIGKILL, table rendering with bad lines."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks  # noqa: F401 - registers the task adapters (section titles)
from zaqbench import methods  # noqa: F401 - registers the methods (row order and notes)
from zaqbench.run.tables import render
from zaqbench.run.results import append_rows
from tests.conftest import result_row

ROOT = Path(__file__).resolve().parents[2]


def _toy_cmd(out, tmp_path, *extra, config="toy_config.py"):
    return [sys.executable, str(ROOT / "tools" / "run_task.py"), "--task", "toy",
            "--config", str(ROOT / "tests" / "data" / config), "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--no-progress", "--bits", "8,6,4",
            "--cfg-options", "methods.zaq.iters=80", *extra]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sigkilled_grid_resumes_to_exactly_one_row_per_cell(tmp_path):
    out, marker = tmp_path / "toy.csv", tmp_path / "blocked"
    env = {**os.environ, "ZAQBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    command = _toy_cmd(out, tmp_path, "--skip-existing", "--resume", config="toy_blocking_config.py")
    proc = subprocess.Popen(command, env={**env, "ZAQBENCH_TEST_BLOCK": str(marker)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240  # the child writes the marker when it reaches the blocking job (W8A8)
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the child never reached the blocking job"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [(r["method"], r["wbits"]) for r in _rows(out)] == [("fp", "32"), ("ptq", "8")]  # killed half way
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    cells = [(r["method"], r["wbits"], r["seed"]) for r in _rows(out)]
    assert sorted(cells) == sorted([("fp", "32", "0")] + [(m, b, "0") for m in ("ptq", "block", "zaq")
                                                          for b in ("8", "6", "4")])




def test_tables_report_bad_lines_and_render_valid_rows(tmp_path):
    path = tmp_path / "cls.csv"
    append_rows(path, [result_row(method="fp", wbits=32, abits=32, value=90.0), result_row(), result_row(seed=1, value=55.0),
                       result_row(task="weird")])
    with open(path, "a") as f:
        f.write("cls,m,torn\n")
    problems = []
    text = render(tmp_path, problems.append)
    assert any("cls.csv:5: unknown task 'weird'" in p for p in problems)
    assert any("cls.csv:6:" in p and "torn" in p for p in problems)
    assert "| m | ptq | 90.00 | 50.00 ± 7.07 (55.6%) |" in text  # percent metrics: two decimals
    assert render(tmp_path, lambda _: None) == text  # deterministic: same CSVs, same bytes


def test_tables_render_rows_that_record_method_settings(tmp_path):
    plain = tmp_path / "plain"
    append_rows(plain / "cls.csv", [result_row(method="fp", wbits=32, abits=32, value=90.0), result_row()])
    with_settings = tmp_path / "settings"
    append_rows(with_settings / "cls.csv", [
        result_row(method="fp", wbits=32, abits=32, value=90.0),
        result_row(extra_metrics="top5=98.0;cfg.batch_size=128;cfg.calib_batches=4;cfg.g_betas=0.9/0.999")])
    problems = []
    assert render(with_settings, problems.append) == render(plain, problems.append)
    assert problems == []


def test_committed_results_readme_is_reproducible():
    readme = ROOT / "results" / "README.md"
    if not readme.exists():
        pytest.skip("no committed results/README.md")
    assert render(ROOT / "results", lambda _: None) == readme.read_text()


def test_rankings_are_claimed_only_beyond_the_seed_spread(tmp_path):
    rows = [result_row(method="fp", wbits=32, abits=32, value=90.0)]
    for seed, (zaq, ptq, zeroq) in enumerate([(88.0, 80.0, 87.5), (88.2, 80.4, 88.6), (87.8, 79.6, 87.0)]):
        rows += [result_row(method="zaq", value=zaq, seed=seed), result_row(method="ptq", value=ptq, seed=seed),
                 result_row(method="zeroq", value=zeroq, seed=seed)]
    append_rows(tmp_path / "cls.csv", rows)
    text = render(tmp_path, lambda _: None)
    lines = {ln.split("|")[3].strip(): ln for ln in text.splitlines() if ln.startswith("| m | W4A4 |")}
    assert "zaq ahead" in lines["ptq"] and "+8.00" in lines["ptq"]
    # zeroq's mean is 0.3 below but its std (0.8) is larger: no ranking is claimed
    assert "within the seed spread" in lines["zeroq"]


def test_curve_tables_show_mean_and_std_per_iteration(tmp_path):
    from zaqbench.run.curves import CURVE_COLUMNS

    def crow(seed, iteration, value, options=""):
        base = {c: "x" for c in CURVE_COLUMNS}
        base.update(task="cls", model="m", method="zaq", wbits=4, abits=4, metric="top1", seed=seed,
                    iteration=iteration, value=value, fp_value=90.0, cfg_options=options,
                    commit="abcdef0123" if seed == 0 else "1234567890")
        return base

    rows = [crow(s, it, v) for s, vals in enumerate([(80.0, 85.0), (82.0, 87.0)]) for it, v in zip((0, 40), vals)]
    rows.append(crow(0, 0, 70.0, "methods.zaq.bns_weight=0.0"))
    append_rows(tmp_path / "curves" / "cls_m.csv", rows, CURVE_COLUMNS)
    # any CSV in ablations/ is a curve table too (e.g. the recipe's curves from before a change)
    append_rows(tmp_path / "ablations" / "cls_before.csv", [crow(0, 0, 60.0)], CURVE_COLUMNS)
    text = render(tmp_path, lambda _: None)
    # rows without run options name the commit(s) whose config they ran
    assert "| m | zaq | W4A4 | (config as is at 1234567, abcdef0) | 81.00 ± 1.41 (2) | 86.00 ± 1.41 (2) |" in text
    assert "| m | zaq | W4A4 | bns_weight=0.0 | 70.00 | – |" in text
    assert "### cls_before" in text and "| m | zaq | W4A4 | (config as is at abcdef0) | 60.00 |" in text
    # curves that only rise show no drop
    assert "| +0.00 (s0), +0.00 (s1) |" in text


def test_curve_tables_show_each_seeds_worst_drop_below_iteration_0(tmp_path):
    from zaqbench.run.curves import CURVE_COLUMNS

    def crow(seed, iteration, value):
        base = {c: "x" for c in CURVE_COLUMNS}
        base.update(task="seg", model="m", method="zaq", wbits=6, abits=6, metric="mIoU", seed=seed,
                    iteration=iteration, value=value, fp_value=43.0, cfg_options="", commit="abcdef0123")
        return base

    curves = {0: (42.8, 42.9, 42.3, 42.6), 1: (42.5, 42.6, 42.7, 42.6)}  # seed 0 dips 0.5 at it 20
    rows = [crow(s, it, v) for s, vals in curves.items() for it, v in zip((0, 10, 20, 40), vals)]
    append_rows(tmp_path / "curves" / "seg_m.csv", rows, CURVE_COLUMNS)
    text = render(tmp_path, lambda _: None)
    assert "| -0.50 (s0), +0.00 (s1) |" in text


def test_probe_tables_say_which_snapshot_each_probe_set_would_pick(tmp_path):
    from zaqbench.run.probes import PROBE_COLUMNS

    def prow(iteration, value, d_initial, d_final):
        base = {c: "x" for c in PROBE_COLUMNS}
        base.update(task="seg", model="m", method="zaq", wbits=6, abits=6, seed=0, iteration=iteration,
                    metric="mIoU", value=value, d_o_initial_g=d_initial, d_o_final_g=d_final)
        return base

    rows = [prow(0, 42.0, 0.3, 0.1), prow(10, 43.0, 0.2, 0.2), prow(20, 41.0, 0.1, 0.3)]
    append_rows(tmp_path / "curves" / "probes_seg_m.csv", rows, PROBE_COLUMNS)
    text = render(tmp_path, lambda _: None)
    # initial-G probes pick it 20 (lowest D_o) although it is the worst: rho = -0.5; final-G picks it 0
    assert "| m | zaq | W6A6 | 0 | 42.00 | 43.00 (it 10) | 41.00 (it 20), ρ -0.50 | 42.00 (it 0), ρ +0.50 |" in text
    assert text.count("### probes_seg_m") == 1  # a probe table, never also read as a budget curve


def test_not_applicable_rows_render_as_na_with_their_reason_and_are_not_ranked(tmp_path):
    rows = [result_row(method="fp", wbits=32, abits=32, value=90.0)]
    for seed in range(2):
        rows += [result_row(method="zaq", value=88.0 + seed, seed=seed),
                 result_row(method="dfq", value=float("nan"), seed=seed, calib_data="n/a: no chain found")]
    append_rows(tmp_path / "cls.csv", rows)
    text = render(tmp_path, lambda _: None)
    assert "| m | dfq | 90.00 | n/a (no chain found) |" in text
    assert not [ln for ln in text.splitlines() if ln.startswith("| m | W4A4 |") and "dfq" in ln]


def test_tables_never_merge_rows_of_different_user_data(tmp_path):
    rows = [result_row(method="fp", wbits=32, abits=32, value=90.0), result_row(value=45.0),
            result_row(dataset="d@/data/a#11111111", value=60.0), result_row(dataset="d@/data/b#22222222", value=70.0)]
    append_rows(tmp_path / "cls.csv", rows)
    text = render(tmp_path, lambda msg: None)
    # the default data's cell and one cell per user data root, each with its own value
    assert "| m | ptq | 90.00 | 45.00" in text
    assert "| m on d@/data/a#11111111 | ptq | 90.00 | 60.00" in text
    assert "| m on d@/data/b#22222222 | ptq | 90.00 | 70.00" in text


def test_rankings_say_whether_a_fresh_clone_reproduces_them(tmp_path):
    def seeds(method, values):
        return [result_row(method=method, seed=i, value=v) for i, v in enumerate(values)]

    append_rows(tmp_path / "cls.csv", seeds("zaq", [80.0, 81.0, 80.5]) + seeds("ptq", [60.0, 61.0, 60.5]))
    (tmp_path / "fresh_clone").mkdir()
    append_rows(tmp_path / "fresh_clone" / "cls.csv", seeds("zaq", [70.0, 71.0, 70.5]) + seeds("ptq", [70.2, 71.1, 70.4]))
    text = render(tmp_path, lambda msg: None)
    assert "| m | W4A4 | ptq | +20.00 | 0.50 | 3/3 | zaq ahead | within the seed spread (differs) |" in text
    # rows of another config (here: ZAQ rerun with a new budget) are not the fresh clone's check of it
    append_rows(tmp_path / "cls.csv", [{**row, "config_hash": "new"} for row in seeds("zaq", [80.0, 81.0, 80.5])])
    text = render(tmp_path, lambda msg: None)
    assert "| m | W4A4 | ptq | +20.00 | 0.50 | 3/3 | zaq ahead | not run (this config) |" in text


def test_selection_replays_in_curves_get_their_own_table_not_a_curve_table(tmp_path):
    from zaqbench.run.probes import SELECTION_COLUMNS

    def srow(z, iteration, value, last, returned):
        base = {c: "x" for c in SELECTION_COLUMNS}
        base.update(task="seg", model="m", method="zaq", wbits=6, abits=6, seed=1, probe_z=z, iteration=iteration,
                    returned_iteration=returned, metric="mIoU", value=value, last_value=last)
        return base

    rows = [srow(0, 0, 42.5, 42.5, 0), srow(0, 100, 41.8, 41.8, 100),  # no margin: the last iterate
            srow(2, 0, 42.5, 42.5, 0), srow(2, 100, 42.76, 41.8, 50)]  # z = 2 keeps iterate 50
    append_rows(tmp_path / "curves" / "selection_replay_m.csv", rows, SELECTION_COLUMNS)  # no 'probes_' prefix
    text = render(tmp_path, lambda _: None)
    assert "## What the distilled-probe selection returns" in text and "Budget curves" not in text
    assert "| m | zaq | W6A6 | 1 | 0 | 42.50 | 41.80 | 41.80 (it 100) |" in text
    assert "| m | zaq | W6A6 | 1 | 2 | 42.50 | 41.80 | 42.76 (it 50) |" in text
