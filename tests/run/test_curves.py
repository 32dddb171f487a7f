"""Budget curves end to end on tiny settings, and their bad input."""
import csv
from pathlib import Path

import pytest

import tasks  # noqa: F401
from zaqbench.run.curves import CURVE_COLUMNS, main

TINY = ["task.model.width=4", "task.data.image_size=16", "task.teacher.epochs=1", "task.teacher.batch_size=32",
        "methods.zaq.batch_size=4", "methods.zaq.q_steps=1", "methods.zaq.calib_batches=1",
        "methods.zaq-no-feat.batch_size=4", "methods.zaq-no-feat.q_steps=1"]


@pytest.fixture
def env(tmp_path, monkeypatch, fmnist_root):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return {"root": str(fmnist_root), "out": tmp_path / "curves" / "c.csv", "work": str(tmp_path / "work")}


def run(env, *extra, options=TINY):
    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(env["out"]),
            "--work-dir", env["work"], "--no-progress", *extra]
    return main(args + ["--cfg-options", *options])


def rows(path):
    return list(csv.DictReader(open(path))) if Path(path).exists() else []


@pytest.mark.slow
def test_curve_rows_for_every_point_seed_and_method(env):
    assert run(env, "--methods", "zaq,zaq-no-feat", "--seeds", "0,1", "--points", "0,1,3") == 0
    written = rows(env["out"])
    assert list(written[0]) == CURVE_COLUMNS
    keys = [(r["method"], r["seed"], r["iteration"]) for r in written]
    assert keys == [(m, s, i) for s in "01" for m in ("zaq", "zaq-no-feat") for i in "013"]
    assert all(r["calib_data"] == "zaq-generator" and r["w_granularity"] == "per-channel" for r in written)
    assert all(r["device"].startswith("cpu threads=") for r in written)
    assert written[0]["cfg_options"] == ";".join(TINY)
    assert env["out"].with_suffix(".png").is_file()
    # every run trained max(points) iterations and kept its snapshots
    runs = list(Path(env["work"]).glob("cls/resnet20/zaq-w4a4-s0-*/snapshots"))
    assert len(runs) == 1 and len(list(runs[0].iterdir())) == 3


@pytest.mark.slow
def test_dry_run_trains_nothing_and_skip_existing_runs_only_missing_curves(env, capsys):
    assert run(env, "--seeds", "0", "--points", "0,2", "--dry-run") == 0
    listing = capsys.readouterr().out
    assert "zaq          W4A4 seed 0" in listing and "to run (missing 0,2)" in listing and "(0/1 done)" in listing
    assert not env["out"].exists() and not Path(env["work"]).exists()
    assert not (Path(env["work"]).parent / "cache" / "teachers").exists()  # not even the teacher

    assert run(env, "--seeds", "0", "--points", "0,2") == 0
    assert run(env, "--seeds", "0,1", "--points", "0,2", "--dry-run") == 0
    seed_lines = [line for line in capsys.readouterr().out.splitlines() if "W4A4 seed" in line]
    assert seed_lines[0].endswith("done") and seed_lines[1].endswith("to run (missing 0,2)")
    assert run(env, "--seeds", "0,1", "--points", "0,2", "--skip-existing") == 0  # seed 1 only
    assert [(r["seed"], r["iteration"]) for r in rows(env["out"])] == [("0", "0"), ("0", "2"), ("1", "0"), ("1", "2")]
    # a point missing from the file (same run length, so the same hash) makes its curve run again, whole
    assert run(env, "--seeds", "0", "--points", "0,1,2", "--skip-existing") == 0
    assert [(r["seed"], r["iteration"]) for r in rows(env["out"])][4:] == [("0", "0"), ("0", "1"), ("0", "2")]


@pytest.mark.parametrize("extra, message", [
    (["--points", ""], "--points is empty"),
    (["--points", "0,-5"], "must be >= 0"),
    (["--points", "0,ten"], "comma-separated integers"),
    (["--points", "0"], "at least one iteration > 0"),
    (["--methods", "ptq"], "need methods that train"),
    (["--seeds", "x"], "--seeds must be"),
])
def test_bad_input_is_one_line_and_writes_nothing(env, capsys, extra, message):
    assert run(env, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]
    assert not env["out"].exists()
    assert not (Path(env["work"]).parent / "cache" / "teachers").exists()  # no teacher was trained


def test_bad_zaq_option_fails_before_the_teacher(env, capsys):
    assert run(env, options=TINY + ["methods.zaq.q_trust_steps=-1"]) == 2
    assert "methods.zaq.q_trust_steps=-1" in capsys.readouterr().err
    assert not (Path(env["work"]).parent / "cache" / "teachers").exists()


@pytest.mark.slow
def test_probes_read_each_snapshot_of_the_curve_run(env, tmp_path):
    from zaqbench.run.probes import PROBE_COLUMNS
    from zaqbench.run.probes import main as probes

    common = ["--methods", "zaq", "--seeds", "0", "--points", "0,1,3"]
    assert run(env, *common) == 0
    curve = {r["iteration"]: r["value"] for r in rows(env["out"])}
    probe_out = tmp_path / "probes.csv"
    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(probe_out),
            "--work-dir", env["work"], "--no-progress", *common, "--probe-batches", "2", "--cfg-options", *TINY]
    assert probes(args) == 0
    written = rows(probe_out)
    assert list(written[0]) == PROBE_COLUMNS
    # the same run folder and snapshots as the curve: the same metric at every point
    assert {r["iteration"]: r["value"] for r in written} == curve
    assert all(r["probe_images"] == "8" for r in written)  # 2 batches of the run's batch size 4
    initial = [float(r["d_o_initial_g"]) for r in written]
    final = [float(r["d_o_final_g"]) for r in written]
    assert all(d > 0 for d in initial + final) and initial != final  # two different generators
    assert probes(args) == 0  # fixed probes: a second pass gives the same numbers
    again = rows(probe_out)[3:]
    assert [r["d_o_initial_g"] for r in again] == [r["d_o_initial_g"] for r in written]


def test_probes_without_a_finished_run_is_one_line(env, capsys, tmp_path, monkeypatch):
    from zaqbench.run.probes import main as probes

    out = tmp_path / "probes.csv"
    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(out),
            "--work-dir", env["work"], "--no-progress", "--points", "0,2", "--cfg-options", *TINY]
    assert probes(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no finished run in") and "tools/budget_curve.py" in err
    assert not out.exists() and not (Path(env["work"]).parent / "cache" / "teachers").exists()
    assert probes([*args, "--probe-batches", "0"]) == 2
    assert "--probe-batches=0 is not valid; use a positive integer" in capsys.readouterr().err
    for flag in ("--dry-run", "--skip-existing", "--resume"):  # the curve command's, not the probes'
        with pytest.raises(SystemExit) as exit_info:
            probes([*args, flag])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith(f"error: unrecognized arguments: {flag}")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    assert probes(args) == 2
    assert "runs in one process" in capsys.readouterr().err


def test_probes_of_a_point_without_a_snapshot_fail_before_the_teacher(env, capsys, tmp_path):
    from zaqbench.run.probes import main as probes
    from zaqbench.run.probes import build_parser as probe_parser
    from zaqbench.run.runner import build_plan

    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(tmp_path / "p.csv"),
            "--work-dir", env["work"], "--no-progress", "--method", "zaq", "--points", "0,1,2",
            "--cfg-options", *TINY]
    plan = build_plan(probe_parser().parse_args(args), method_overrides={"zaq": {"iters": 2}})
    run_dir = plan.run_dir(plan.jobs[0], 0)
    (run_dir / "snapshots").mkdir(parents=True)
    for name in ("generator.pth", "snapshots/iter_000000.pth", "snapshots/iter_000002.pth"):
        (run_dir / name).write_bytes(b"")  # a finished run of --points 0,2
    capsys.readouterr()
    assert probes(args) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no snapshot at iteration(s) 1" in errors[0], err
    assert "tools/budget_curve.py" in errors[0] and "--points 0,1,2" in errors[0]
    assert "preparing the full-precision model" not in err  # refused at plan time, before any work
    assert not (tmp_path / "p.csv").exists() and not (Path(env["work"]).parent / "cache" / "teachers").exists()


def test_probe_agreement_reads_the_ranking():
    import pandas as pd

    from zaqbench.run.probes import agreement

    rows_ = pd.DataFrame({"iteration": [0, 10, 20], "value": [90.0, 91.0, 89.0],
                          "d_o_initial_g": [0.2, 0.1, 0.3], "d_o_final_g": [0.1, 0.2, 0.3]})
    text = agreement(rows_)
    assert "d_o_initial_g: rank correlation +1.00, picks iteration 10 (91.0000)" in text
    assert "d_o_final_g: rank correlation +0.50, picks iteration 0 (90.0000)" in text
    assert text.endswith("best iteration 10 (91.0000)")


@pytest.mark.slow
def test_selection_replay_on_a_last_run_equals_a_probe_run(env, tmp_path):
    """The replay of returned_iterate='probe' on a run trained with 'last' returns, at every point, the
    iterate (and metric) that a run trained with 'probe' returns: the same loop, probes and rule."""
    from zaqbench.run.probes import SELECTION_COLUMNS
    from zaqbench.run.probes import main as probes

    common = ["--methods", "zaq", "--seeds", "0", "--points", "0,1,2,4"]
    probe = ["methods.zaq.probe_images=4", "methods.zaq.probe_distill_iters=2", "methods.zaq.probe_interval=2"]
    assert run(env, *common, options=TINY + probe + ["methods.zaq.returned_iterate=last"]) == 0
    replay_out = tmp_path / "replay.csv"
    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(replay_out),
            "--work-dir", env["work"], "--no-progress", *common, "--selection-z", "0,1",
            "--cfg-options", *TINY, *probe, "methods.zaq.returned_iterate=last"]
    assert probes(args) == 0
    replayed = rows(replay_out)
    assert list(replayed[0]) == SELECTION_COLUMNS and len(replayed) == 8

    for z in ("0", "1"):
        selected = tmp_path / f"selected-{z}.csv"
        env_z = {**env, "out": selected}
        assert run(env_z, *common, options=TINY + probe + ["methods.zaq.returned_iterate=probe",
                                                         f"methods.zaq.probe_z={z}"]) == 0
        curve = {r["iteration"]: r["value"] for r in rows(selected)}
        mine = {r["iteration"]: r["value"] for r in replayed if float(r["probe_z"]) == float(z)}
        assert {k: float(v) for k, v in mine.items()} == {k: float(v) for k, v in curve.items()}


def test_selection_replay_refuses_runs_that_selected(env, capsys):
    from zaqbench.run.probes import main as probes

    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--work-dir", env["work"],
            "--no-progress", "--methods", "zaq", "--points", "0,2", "--selection-z", "0",
            "--cfg-options", *TINY, "methods.zaq.returned_iterate=probe"]
    assert probes(args) == 2
    assert "returned_iterate=last" in capsys.readouterr().err
