"""The runner end to end on tiny settings, and every bad input: one line, exit 2, no row."""
import argparse
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tasks  # noqa: F401
from zaqbench.run.results import parse_extra_metrics
from zaqbench.run.runner import default_model, main, run_dir_name
from tests.run.test_bad_input import run_toy, toy  # noqa: F401 - toy: the fixture of a toy run

ROOT = Path(__file__).resolve().parents[2]
TINY = ["task.model.width=4", "task.data.image_size=16", "task.teacher.epochs=1", "task.teacher.batch_size=32",
        "methods.zaq.iters=2", "methods.zaq.batch_size=4", "methods.zaq.q_steps=1", "methods.zaq.calib_batches=1",
        "methods.zeroq.distill_iters=3", "methods.zeroq.batch_size=8", "methods.ptq.batch_size=8",
        "methods.real-ptq.batch_size=8"]


@pytest.fixture
def env(tmp_path, monkeypatch, fmnist_root):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return {"root": str(fmnist_root), "out": tmp_path / "out.csv", "work": str(tmp_path / "work")}


def run(env, *extra, options=TINY):
    args = ["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(env["out"]),
            "--work-dir", env["work"], "--no-progress", *extra]
    return main(args + ["--cfg-options", *options] if options else args)


def rows(path):
    if not Path(path).exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def test_end_to_end_writes_one_row_per_method(env, capsys):
    assert run(env, "--methods", "fp,ptq,real-ptq,zeroq,zaq", "--bits", "8,4") == 0
    written = rows(env["out"])
    assert [(r["method"], r["wbits"]) for r in written] == [
        ("fp", "32"), ("ptq", "8"), ("real-ptq", "8"), ("zeroq", "8"), ("zaq", "8"),
        ("ptq", "4"), ("real-ptq", "4"), ("zeroq", "4"), ("zaq", "4")]
    for r in written:
        assert 0 <= float(r["value"]) <= 100 and r["fp_value"] == written[0]["value"]
        assert r["dataset"].startswith("fashion-mnist@") and r["metric"] == "top1"  # user data: where and which
    assert {r["calib_data"] for r in written} == {"none", "gaussian-noise", "real-train-images",
                                                   "zeroq-distilled", "zaq-generator"}
    assert "zaq" in capsys.readouterr().out  # the printed table
    # each row records the settings of its method (TINY's overrides included), after any metric
    settings = {r["method"]: parse_extra_metrics(r["extra_metrics"])[1] for r in written}
    assert settings["fp"] == {}
    # the config's noise baseline averages its batches' ranges, and its rows say so
    assert settings["ptq"] == {"batch_size": "8", "calib_batches": "32", "a_range": "ema"}
    assert {r["method"]: r["a_range"] for r in written if r["wbits"] == "4"} == {
        "ptq": "ema", "real-ptq": "minmax", "zeroq": "minmax", "zaq": "minmax"}
    assert settings["zeroq"] == {"batch_size": "8", "calib_batches": "2", "distill_iters": "3", "lr": "0.5"}
    assert {k: settings["zaq"][k] for k in ("iters", "batch_size", "q_steps", "q_lr", "g_lr", "q_bn_update",
                                            "lr_milestones")} == {
        "iters": "2", "batch_size": "4", "q_steps": "1", "q_lr": "0.01", "g_lr": "0.001", "q_bn_update": "False",
        "lr_milestones": "none"}
    assert "checkpoint_interval" not in settings["zaq"]  # book-keeping: resuming gives the same Q
    # each ZAQ run leaves its folder where run_dir_name (used by tools/make_plots.py) says
    for r in (r for r in written if r["method"] == "zaq"):
        name = run_dir_name("zaq", int(r["wbits"]), int(r["abits"]), 0, r["config_hash"])
        assert (Path(env["work"]) / "cls" / "resnet20" / name / "losses.jsonl").is_file()
    # the teacher is cached as a weights-only state dict, and a second run reuses it
    cached = list((Path(env["work"]).parent / "cache" / "teachers").glob("cls-resnet20-*.pth"))
    assert len(cached) == 1
    torch.load(cached[0], weights_only=True)
    mtime = cached[0].stat().st_mtime_ns
    assert run(env, "--methods", "fp") == 0
    assert list(cached[0].parent.glob("cls-resnet20-*.pth")) == cached
    assert cached[0].stat().st_mtime_ns == mtime
    assert rows(env["out"])[-1]["value"] == written[0]["value"]


def test_calibration_data_is_made_once_across_bit_widths(env, monkeypatch, capsys):
    import zaqbench.methods
    from tasks.classification import ClassificationAdapter

    calls = {"distill": 0, "real": 0}
    distill, real_batches = zaqbench.methods.zeroq.distill_batch, ClassificationAdapter.real_batches

    def counting_distill(*args, **kwargs):
        calls["distill"] += 1
        return distill(*args, **kwargs)

    def counting_real_batches(self, *args, **kwargs):
        calls["real"] += 1
        return real_batches(self, *args, **kwargs)

    monkeypatch.setattr(zaqbench.methods.zeroq, "distill_batch", counting_distill)
    monkeypatch.setattr(ClassificationAdapter, "real_batches", counting_real_batches)
    assert run(env, "--methods", "zeroq,real-ptq", "--bits", "8,6,4") == 0
    # zeroq's config distils 2 batches (calib_batches=2) and real-ptq reads train/ once: for all 3 widths
    assert calls == {"distill": 2, "real": 1}
    assert capsys.readouterr().err.count("reusing this run's calibration batches") == 4
    together = rows(env["out"])
    alone = []
    for bits in ("8", "6", "4"):
        env["out"] = env["out"].with_name(f"alone{bits}.csv")
        assert run(env, "--methods", "zeroq,real-ptq", "--bits", bits) == 0
        alone += rows(env["out"])
    assert calls == {"distill": 2 + 3 * 2, "real": 1 + 3}
    same = ("method", "wbits", "value", "iters", "extra_metrics", "config_hash", "calib_data")

    def untimed(row):  # the set-up time, measured on every row, is the one entry that may differ
        extra = ";".join(kv for kv in row["extra_metrics"].split(";") if not kv.startswith("shared_seconds="))
        return [extra if c == "extra_metrics" else row[c] for c in same]

    assert [untimed(r) for r in together] == [untimed(r) for r in alone]
    assert all("shared_seconds=" in r["extra_metrics"] for r in together + alone)
    assert len({r["value"] for r in together if r["method"] == "zeroq"}) > 1  # the widths differ: a real check


def test_no_progress_hides_every_bar(env, capfd):
    methods = ["--methods", "fp,ptq,real-ptq,zeroq,zaq", "--bits", "8"]
    assert run(env, *methods) == 0  # --no-progress; trains the teacher too (fresh cache)
    quiet = capfd.readouterr()
    assert "\r" not in quiet.out + quiet.err and "it/s" not in quiet.err
    env["out"] = env["out"].with_name("loud.csv")
    assert main(["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(env["out"]),
                 "--work-dir", env["work"], *methods, "--cfg-options", *TINY]) == 0
    loud = capfd.readouterr().err  # the same run with bars: calibration, ZeroQ's distillation, ZAQ
    assert [bar for bar in ("\r", "ptq calibration", "zeroq distill", "zaq") if bar not in loud] == []
    assert "(batches:" not in loud  # the step lines stand in for bars only under --no-progress


def expect_error(capsys, code, *needles):
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    assert not any("Traceback" in ln for ln in lines)
    for n in needles:
        assert n in errors[0], errors[0]


def test_bad_task_model_method(env, capsys):
    expect_error(capsys, main(["--task", "nope"]), "unknown task 'nope'", "cls")
    expect_error(capsys, run(env, options=None, *["--model", "resnet99"]), "unknown model", "resnet20")
    expect_error(capsys, run(env, "--methods", "fp,bogus"), "unknown method 'bogus'", "zaq")
    assert rows(env["out"]) == []


@pytest.mark.parametrize("bits", [["--wbits", "1"], ["--abits", "9"], ["--bits", "4,12"], ["--bits", "x"]])
def test_bad_bits(env, capsys, bits):
    code = run(env, *bits)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("2-8" in err or "integers" in err)
    assert rows(env["out"]) == []


def test_bad_checkpoints(env, capsys, tmp_path):
    expect_error(capsys, run(env, "--checkpoint", str(tmp_path / "missing.pth")), "does not exist")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    expect_error(capsys, run(env, "--checkpoint", str(corrupt)), "corrupt")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "other.bias": torch.zeros(2)}, wrong)
    expect_error(capsys, run(env, "--checkpoint", str(wrong)), "does not match", "missing", "unexpected")
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "meta": {"args": argparse.Namespace(lr=0.1)}}, pickled)
    expect_error(capsys, run(env, "--checkpoint", str(pickled)), "--trust-checkpoint")
    assert rows(env["out"]) == []


def test_bad_data_options_and_out(env, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env_missing = {**env, "root": str(empty)}
    expect_error(capsys, run(env_missing, "--methods", "fp"), "Fashion-MNIST not found", "dataset-fashion-mnist")
    expect_error(capsys, run({**env, "root": str(empty / "nowhere")}, "--methods", "fp"), "does not exist")
    expect_error(capsys, run(env, options=["methods.zaq.iters"]), "malformed --cfg-options")
    expect_error(capsys, run({**env, "out": tmp_path}), "is a directory")
    expect_error(capsys, run(env, "--methods", "zaq", options=["methods.zaq.itres=3"]), "unknown option")


def test_task_nope_from_the_command_line():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "run_task.py"), "--task", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "valid tasks:" in lines[0] and "cls" in lines[0]


def test_skip_existing_and_dry_run(env, capsys):
    assert run(env, "--methods", "fp,ptq", "--bits", "8") == 0
    assert len(rows(env["out"])) == 2
    capsys.readouterr()
    assert run(env, "--methods", "fp,ptq,real-ptq", "--bits", "8", "--dry-run") == 0
    plan = capsys.readouterr().out
    assert plan.count("done, took") == 2 and plan.count("to run") == 1
    assert run(env, "--methods", "fp,ptq,real-ptq", "--bits", "8", "--skip-existing") == 0
    assert [r["method"] for r in rows(env["out"])] == ["fp", "ptq", "real-ptq"]
    assert run(env, "--methods", "fp,ptq,real-ptq", "--bits", "8", "--skip-existing") == 0
    assert len(rows(env["out"])) == 3


def test_default_model_comes_from_the_task_folder(tmp_path):
    assert default_model("cls") == (ROOT / "configs" / "cls" / "DEFAULT").read_text().strip()
    (tmp_path / "x").mkdir()
    assert default_model("x", tmp_path) is None
    (tmp_path / "x" / "DEFAULT").write_text("tiny\n")
    assert default_model("x", tmp_path) == "tiny"


# -- progress and time on the toy task (tests/toy_task.py) ----------------------------------------
def test_no_progress_prints_one_line_as_each_long_step_starts(toy, capsys):
    assert run_toy(toy, "--method", "fp,ptq,zeroq", "--bits", "8,4", "--cfg-options",
                   "methods.zeroq.distill_iters=2", "methods.zeroq.batch_size=8") == 0
    err = capsys.readouterr().err
    assert "evaluating the full-precision model" in err
    # the calibration batches are made once for both widths, then each width calibrates and is evaluated
    assert err.count("ptq calibration data (batches: 2)") == 1 and err.count("ptq calibration (batches: 2)") == 2
    assert err.count("zeroq calibration data (batches: 1)") == 1 and err.count("zeroq calibration (batches: 1)") == 2
    for step in ("ptq W8A8: evaluating", "ptq W4A4: evaluating", "zeroq W8A8: evaluating", "zeroq W4A4: evaluating"):
        assert err.count(step) == 1, step
    assert "\r" not in err


def test_rows_time_their_own_work_and_record_the_set_up_shared_across_widths(toy, monkeypatch):
    import time

    import tests.toy_task
    from zaqbench.methods.ptq import NoisePTQ

    noise, evaluate = NoisePTQ.batches, tests.toy_task.ToyAdapter.evaluate

    def slow_noise(self, ctx):  # making the calibration batches: 1 s, once for both widths
        time.sleep(1.0)
        yield from noise(self, ctx)

    def slow_evaluate(self, model):  # every evaluation, the FP one included: 0.3 s
        time.sleep(0.3)
        return evaluate(self, model)

    monkeypatch.setattr(NoisePTQ, "batches", slow_noise)
    monkeypatch.setattr(tests.toy_task.ToyAdapter, "evaluate", slow_evaluate)
    assert run_toy(toy, "--method", "fp,ptq,zeroq", "--bits", "8,4", "--cfg-options",
                   "methods.zeroq.distill_iters=3", "methods.zeroq.calib_batches=2", "methods.zeroq.batch_size=8") == 0
    written = {(r["method"], r["wbits"]): r for r in rows(toy["out"])}
    assert float(written["fp", "32"]["seconds"]) >= 0.3  # the FP evaluation every invocation makes
    shared = {bits: parse_extra_metrics(written["ptq", bits]["extra_metrics"])[0]["shared_seconds"]
              for bits in ("8", "4")}
    assert shared["8"] == shared["4"] >= 1.0  # the same set-up, on each row that used it
    for bits in ("8", "4"):  # neither row's own time includes it, the first width's neither
        assert 0.3 <= float(written["ptq", bits]["seconds"]) < 1.0
        assert written["zeroq", bits]["iters"] == "3"  # distill_iters as set, not times calib_batches
    assert "shared_seconds" not in written["fp", "32"]["extra_metrics"]
