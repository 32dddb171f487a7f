"""Budget curves end to end on tiny settings, and their bad input."""
import csv
from pathlib import Path

import pytest

import tasks  # noqa: F401
from zaqbench.curves import CURVE_COLUMNS, main

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


def test_curve_rows_for_every_point_seed_and_method(env):
    assert run(env, "--method", "zaq,zaq-no-feat", "--seeds", "0,1", "--points", "0,1,3") == 0
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


@pytest.mark.parametrize("extra, message", [
    (["--points", ""], "--points is empty"),
    (["--points", "0,-5"], "must be >= 0"),
    (["--points", "0,ten"], "comma-separated integers"),
    (["--points", "0"], "at least one iteration > 0"),
    (["--method", "ptq"], "need methods that train"),
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
