"""Bad input and faults a user can cause: each ends with one clear ``error:`` line,
a non-zero exit and nothing written, or (where stated) a warning and a finished run.

The toy task (tests/toy_task.py) keeps every case to a fraction of a second.
"""
from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zaqbench.errors import UserError
from zaqbench.run.runner import main

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "tests" / "data" / "toy_config.py")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Paths of a toy run: its own cache, results file and work dir."""
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZAQBENCH_DATA", raising=False)
    return {"out": tmp_path / "out.csv", "work": tmp_path / "work", "cache": tmp_path / "cache", "tmp": tmp_path}


def run_toy(toy, *extra: str, out: Path | None = None, work: Path | None = None) -> int:
    args = ["--task", "toy", "--config", TOY, "--out", str(out or toy["out"]),
            "--work-dir", str(work or toy["work"]), "--no-progress", *extra]
    return main(args)


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_nothing_written(toy) -> None:
    assert not toy["out"].exists()
    assert not toy["work"].exists() or not any(toy["work"].rglob("*.pth"))
    assert not (toy["cache"] / "teachers").exists()


# -- options and arguments: rejected before any work ------------------------------------
BAD_ARGS = {
    "bits with an empty item": (["--bits", "8,,4"], "empty item"),
    "bits with no item": (["--bits", ","], "empty item"),
    "method with no item": (["--methods", ","], "empty item"),
    "a method twice": (["--methods", "ptq,ptq"], "repeats"),
    "bits twice": (["--bits", "8,8"], "repeats"),
    "bits out of range": (["--bits", "8,9"], "--bits=9 is not valid; use 2-8, or 16/32 for full precision"),
    "wbits out of range": (["--wbits", "1"], "--wbits=1 is not valid"),
    "bits and wbits": (["--bits", "8", "--wbits", "4"], "not both"),
    "bits and abits": (["--bits", "8", "--abits", "4"], "not both"),
    "a huge seed": (["--seeds", str(2**70)], "--seeds=1180591620717411303424 is not valid; use an integer from 0"),
    "a negative seed": (["--seeds", "0,-1"], "--seeds=-1 is not valid"),
    "a seed twice": (["--seeds", "1,1"], "repeats 1"),
    "a seed that is no integer": (["--seeds", "2**70"], "--seeds must be comma-separated integers"),
    "zaq iters negative": (["--cfg-options", "methods.zaq.iters=-1"], "methods.zaq.iters"),
    "zaq iters fractional": (["--cfg-options", "methods.zaq.iters=1.5"], "methods.zaq.iters"),
    "zaq iters not a number": (["--cfg-options", "methods.zaq.iters=abc"], "methods.zaq.iters"),
    "zaq batch 0": (["--cfg-options", "methods.zaq.batch_size=0"], "methods.zaq.batch_size"),
    "zaq q_lr text": (["--cfg-options", "methods.zaq.q_lr=fast"], "methods.zaq.q_lr"),
    "zaq checkpoint interval 0": (["--cfg-options", "methods.zaq.checkpoint_interval=0"], "checkpoint_interval"),
    "zaq feature weights": (["--cfg-options", "methods.zaq.feature_weights=bogus"], "feature_weights"),
    "zaq q_steps 0": (["--cfg-options", "methods.zaq.q_steps=0"], "methods.zaq.q_steps"),
    "zaq g_betas a number": (["--cfg-options", "methods.zaq.g_betas=5"], "methods.zaq.g_betas"),
    "ptq batch 0": (["--cfg-options", "methods.ptq.batch_size=0"], "methods.ptq.batch_size"),
    "ptq zero calibration batches": (["--cfg-options", "methods.ptq.calib_batches=0"], "methods.ptq.calib_batches"),
    "ptq unknown range rule": (["--cfg-options", "methods.ptq.a_range=mean"], "methods.ptq.a_range"),
    "ptq range rule a number": (["--cfg-options", "methods.ptq.a_range=1"], "methods.ptq.a_range"),
    "a method section that is not a dict": (["--cfg-options", "methods.zaq=5"], "methods.zaq=5"),
    "an unknown section": (["--cfg-options", "foo.bar=1"], "foo"),
    "a typo in the task section": (["--cfg-options", "task.widht=4"], "task.widht"),
    "eval batch 0": (["--cfg-options", "task.eval.batch_size=0"], "task.eval.batch_size"),
    "an unknown method section": (["--cfg-options", "methods.bogus.x=1"], "bogus"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_fail_before_any_work(toy, capsys, case):
    extra, needle = BAD_ARGS[case]
    assert run_toy(toy, *extra) == 2
    assert_one_error_line(capsys, needle)
    assert_nothing_written(toy)


# -- output locations --------------------------------------------------------------------
def test_work_dir_that_is_a_file_fails_before_the_teacher(toy, capsys):
    blocker = toy["tmp"] / "file"
    blocker.write_text("x")
    assert run_toy(toy, work=blocker / "sub") == 2
    assert_one_error_line(capsys, "--work-dir", "not a directory")
    assert_nothing_written(toy)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_work_dir_fails_before_the_teacher(toy, capsys):
    locked = toy["tmp"] / "locked"
    locked.mkdir(mode=0o500)
    assert run_toy(toy, work=locked / "work") == 2
    assert_one_error_line(capsys, "--work-dir", "not writable")


@pytest.mark.parametrize("kind", ["device", "directory"])
def test_out_that_is_not_a_regular_file_is_refused(toy, capsys, kind):
    out = Path("/dev/null") if kind == "device" else toy["tmp"] / "adir"
    out.mkdir(exist_ok=True) if kind == "directory" else None
    assert run_toy(toy, "--methods", "fp", out=out) == 2
    assert_one_error_line(capsys, "--out")
    assert out.is_char_device() if kind == "device" else out.is_dir()


def test_out_symlink_is_followed_and_kept(toy):
    target = toy["tmp"] / "real.csv"
    link = toy["tmp"] / "link.csv"
    link.symlink_to(target)
    assert run_toy(toy, "--methods", "fp", out=link) == 0
    assert link.is_symlink() and [r["method"] for r in rows_of(target)] == ["fp"]


def test_appends_keep_the_file_mode_and_new_files_follow_the_umask(toy):
    assert run_toy(toy, "--methods", "fp") == 0
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(toy["out"].stat().st_mode) == 0o666 & ~mask
    toy["out"].chmod(0o640)
    assert run_toy(toy, "--methods", "ptq") == 0
    assert stat.S_IMODE(toy["out"].stat().st_mode) == 0o640
    teacher = next((toy["cache"] / "teachers").glob("*.pth"))
    assert stat.S_IMODE(teacher.stat().st_mode) == 0o666 & ~mask


def test_a_second_run_of_the_same_jobs_is_refused_while_the_first_holds_the_lock(toy, capsys):
    from filelock import FileLock

    from zaqbench.run.locks import lock_path

    from zaqbench.run.runner import build_parser, build_plan

    # the run folder the plan uses; another process holds its lock

    args = build_parser().parse_args(["--task", "toy", "--config", TOY, "--out", str(toy["out"]),
                                      "--work-dir", str(toy["work"]), "--methods", "ptq"])
    plan = build_plan(args)
    path = lock_path(plan.run_dir(plan.jobs[0], 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    code = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
        "print('held', flush=True); time.sleep(30)"), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert code.stdout.readline().strip() == "held"
        assert run_toy(toy, "--methods", "ptq") == 2
        assert_one_error_line(capsys, "another run", plan.run_dir(plan.jobs[0], 0).name)
        assert not toy["out"].exists()
    finally:
        code.kill()
        code.wait()
    lock = FileLock(str(path), timeout=0)
    lock.acquire()  # released with its holder
    lock.release()
    assert run_toy(toy, "--methods", "ptq") == 0


def test_an_unwritable_cache_still_finishes_the_run_and_says_so(toy, capsys, monkeypatch):
    blocker = toy["tmp"] / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZAQBENCH_CACHE", str(blocker))
    assert run_toy(toy, "--methods", "fp,ptq") == 0
    err = capsys.readouterr().err
    assert "not writable" in err and "not cached" in err
    assert [r["method"] for r in rows_of(toy["out"])] == ["fp", "ptq"]


def test_a_row_that_cannot_be_appended_is_kept_not_lost(tmp_path):
    from zaqbench.run.results import COLUMNS
    from zaqbench.run.runner import append_or_keep

    row = {c: "x" for c in COLUMNS}
    out = tmp_path / "gone" / "out.csv"
    out.parent.write_text("a file where the folder should be")
    with pytest.raises(UserError, match="kept in"):
        append_or_keep(out, row, tmp_path / "run")
    assert rows_of(tmp_path / "run" / "unsaved_row.csv") == [row]


# -- the results CSV -----------------------------------------------------------------------
def corrupt(path: Path, line: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line - 1] = b"\xff\xfe garbage \x80\n"
    path.write_bytes(b"".join(lines))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["near the top", "last line"])
def test_invalid_bytes_in_the_results_csv_are_skipped_and_never_block_an_append(toy, capsys, where):
    assert run_toy(toy, "--methods", "fp,ptq", "--bits", "8,4") == 0
    n = len(toy["out"].read_bytes().splitlines())
    bad_line = 2 if where == "near the top" else n
    corrupt(toy["out"], bad_line)
    capsys.readouterr()
    assert run_toy(toy, "--methods", "fp,ptq", "--bits", "8,4", "--dry-run") == 0
    out = capsys.readouterr()
    assert f"{toy['out']}:{bad_line}: invalid bytes" in out.err and "to run" in out.out
    assert run_toy(toy, "--methods", "fp,ptq", "--bits", "8,4", "--skip-existing") == 0
    assert run_toy(toy, "--methods", "zaq", "--bits", "8") == 0  # the append after the bad line
    data = toy["out"].read_bytes()
    assert b"\xff\xfe garbage" in data  # what was there is kept as it was
    assert data.decode("utf-8", errors="replace").splitlines()[-1].split(",")[3] == "zaq"
    tables_dir = toy["tmp"] / "tables"
    tables_dir.mkdir()
    (tables_dir / "cls.csv").write_bytes(data)  # the table tool reads <task>.csv
    tables = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tables.py"), "--results",
                             str(tables_dir), "--out", "-"], capture_output=True, text=True, timeout=120)
    assert tables.returncode == 0 and f"cls.csv:{bad_line}: invalid bytes" in tables.stderr


@pytest.mark.slow
def test_make_tables_with_a_missing_results_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tables.py"), "--results",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


# -- data identity -----------------------------------------------------------------------------
def test_the_teacher_and_rows_identify_the_data(toy):
    roots = []
    for name, content in (("a", b"one"), ("b", b"two")):
        root = toy["tmp"] / name
        root.mkdir()
        (root / "data.bin").write_bytes(content)
        roots.append(root)
    for root in roots:
        assert run_toy(toy, "--methods", "fp", "--data-root", str(root), "--skip-existing") == 0
    rows = rows_of(toy["out"])
    assert len(rows) == 2  # the second data root was not skipped as done
    assert rows[0]["config_hash"] != rows[1]["config_hash"]
    assert [r["dataset"].split("@")[1].split("#")[0] for r in rows] == [str(r) for r in roots]
    assert len(list((toy["cache"] / "teachers").glob("*.pth"))) == 2  # one teacher per data
    (roots[0] / "data.bin").write_bytes(b"ONE")  # same size, new content: a new fingerprint
    assert run_toy(toy, "--methods", "fp", "--data-root", str(roots[0]), "--skip-existing") == 0
    assert len(rows_of(toy["out"])) == 3


def test_the_cached_teacher_does_not_depend_on_the_first_seed(toy, monkeypatch):
    values = []
    for seed, cache in (("3", "c1"), ("0", "c2")):
        monkeypatch.setenv("ZAQBENCH_CACHE", str(toy["tmp"] / cache))
        assert run_toy(toy, "--methods", "fp", "--seeds", seed) == 0
        teacher = next((toy["tmp"] / cache / "teachers").glob("*.pth"))
        values.append(torch.load(teacher, weights_only=True))
    assert all(torch.equal(values[0][k], values[1][k]) for k in values[0])


# -- files the user gives ------------------------------------------------------------------------
def test_a_text_file_as_checkpoint(toy, capsys):
    text = toy["tmp"] / "weights.txt"
    text.write_text("these are not weights\n")
    assert run_toy(toy, "--checkpoint", str(text)) == 2
    assert_one_error_line(capsys, "not a PyTorch file")
    assert not toy["out"].exists()


# -- faults during a ZAQ run -----------------------------------------------------------------------
def zaq_iterations(toy, *extra: str) -> list[int]:
    from zaqbench.zaq.loss_log import read_loss_log

    assert run_toy(toy, "--methods", "zaq", "--bits", "8", *extra) == 0
    log = next(toy["work"].rglob("losses.jsonl"))
    return [e["iter"] for e in read_loss_log(log)]


def test_a_torn_last_line_of_the_loss_log_does_not_stop_resume(toy):
    options = ["--cfg-options", "methods.zaq.iters=4", "methods.zaq.checkpoint_interval=2"]
    assert zaq_iterations(toy, *options) == [1, 2, 3, 4]
    log = next(toy["work"].rglob("losses.jsonl"))
    with open(log, "ab") as f:
        f.write(b'{"iter": 5, "d_o": 0.1')  # a write cut short by a kill
    toy["out"].unlink()
    assert zaq_iterations(toy, "--resume", *options) == [1, 2, 3, 4]


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_one(toy, capsys, monkeypatch):
    options = ["--cfg-options", "methods.zaq.iters=4", "methods.zaq.checkpoint_interval=2"]
    assert zaq_iterations(toy, *options) == [1, 2, 3, 4]
    checkpoint = next(toy["work"].rglob("checkpoint.pth"))
    before = checkpoint.read_bytes()
    capsys.readouterr()

    def disk_full(obj, f, *args, **kwargs):  # what torch raises when the device is full
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    toy["out"].unlink()
    assert run_toy(toy, "--methods", "zaq", "--bits", "8", *options) == 2
    assert_one_error_line(capsys, "cannot write", "checkpoint.pth", "intact")
    assert checkpoint.read_bytes() == before
    assert not toy["out"].exists()
    assert not list(checkpoint.parent.glob(".*.tmp"))


def test_a_resume_checkpoint_that_is_not_weights_is_one_line_naming_the_fix(toy, capsys):
    import argparse

    options = ["--cfg-options", "methods.zaq.iters=4", "methods.zaq.checkpoint_interval=2"]
    assert zaq_iterations(toy, *options) == [1, 2, 3, 4]
    checkpoint = next(toy["work"].rglob("checkpoint.pth"))
    torch.save({"iteration": 2, "meta": argparse.Namespace(lr=0.1)}, checkpoint)  # not what zaqbench writes
    toy["out"].unlink()
    capsys.readouterr()
    assert run_toy(toy, "--method", "zaq", "--bits", "8", "--resume", *options) == 2
    line = assert_one_error_line(capsys, "checkpoint.pth", "delete it and rerun without --resume")
    assert "--trust-checkpoint" not in line  # it applies to --checkpoint only, never to a run's own files
    assert not toy["out"].exists()


def test_an_uncalibrated_activation_quantizer_never_observes_during_evaluation():
    from zaqbench.quant import QConfig, calibrate_activations, quantize_model
    from zaqbench.quant.fake_quant import UncalibratedError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))
    qmodel, _ = quantize_model(model, QConfig(wbits=8, abits=8, first_fp=False, last_fp=False),
                               example_input=torch.zeros(1, 1, 8, 8))
    with pytest.raises(UncalibratedError):
        qmodel(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="no batches"):
        calibrate_activations(qmodel, [])
    calibrate_activations(qmodel, [torch.randn(2, 1, 8, 8)])
    assert qmodel(torch.randn(2, 1, 8, 8)).shape == (2, 2, 4, 4)


@pytest.mark.parametrize("task", ["det", "seg"])
def test_tasks_that_write_their_data_into_the_cache_refuse_an_unwritable_one_up_front(tmp_path, monkeypatch,
                                                                                       task):
    import tasks  # noqa: F401 - registers the adapters, as tools/run_task.py does
    from zaqbench.run.runner import build_parser, build_plan

    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZAQBENCH_CACHE", str(blocker))
    args = build_parser().parse_args(["--task", task, "--methods", "fp", "--out", str(tmp_path / "o.csv"),
                                      "--work-dir", str(tmp_path / "w")])
    with pytest.raises(UserError, match="ZAQBENCH_CACHE"):
        build_plan(args)


@pytest.mark.parametrize("extra, needle", [(["--seed", "0"], "unrecognized arguments: --seed"), (["--bits"], "--bits"),
                                           (["--no-such-option"], "unrecognized"), (["--meth", "fp"], "--meth")])
def test_argparse_errors_are_one_line_too(toy, capsys, extra, needle):
    with pytest.raises(SystemExit) as exit_info:
        run_toy(toy, *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and needle in err, err
    assert_nothing_written(toy)


def test_a_meta_device_is_refused(toy, capsys):
    assert run_toy(toy, "--device", "meta") == 2
    assert_one_error_line(capsys, "meta")
    assert_nothing_written(toy)


def test_more_faults_are_one_line(tmp_path, capsys):
    """A config that exits, a torn loss log, a decompression bomb, a results folder that cannot be written."""
    from PIL import Image

    from tasks.imagefolder import FolderSplit, ImageFiles
    from zaqbench.run.results import COLUMNS
    from zaqbench.run.plots import plot_losses
    from zaqbench.run.tables import write_tables
    from zaqbench.run.runner import load_config

    config = tmp_path / "exits.py"
    config.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(UserError, match="exited \\(status 3\\)"):
        load_config(config, {})
    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.jsonl").write_text('{"iter": 1, "loss_q": 1.0, "loss_g": -1.0, "d_o": 1.0, "d_f": 0.0, '
                                      '"l_a": 0.0, "bns": 0.0}\n{"iter": 2, "loss_q"')
    plot_losses("cls", run, tmp_path / "losses.png")  # the torn last line is left out
    assert (tmp_path / "losses.png").exists()
    bomb = tmp_path / "bomb.png"
    Image.new("L", (8, 8)).save(bomb)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 10  # the 64-pixel image now counts as a bomb (more than twice the limit)
    try:
        with pytest.raises(UserError, match="too large to decode safely"):
            ImageFiles(FolderSplit(tmp_path, [(str(bomb), 0)], {}, []), lambda img: img)[0]
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    results = tmp_path / "results"
    results.mkdir()
    (results / "cls.csv").write_text(",".join(COLUMNS) + "\n")
    (results / "README.md").mkdir()  # where the README would go is a folder: the write fails, even for root
    assert write_tables(results, None) == 2
    assert "error: cannot write" in capsys.readouterr().err


def test_a_full_disk_and_a_foreign_lock_are_one_line(tmp_path, monkeypatch):
    import builtins

    from zaqbench.zaq.loss_log import append_loss_entry
    from zaqbench.run.locks import hold_run_folders

    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith("losses.jsonl") and "a" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(UserError, match="No space left on device.*--resume"):
        append_loss_entry(tmp_path / "losses.jsonl", {"iter": 1})
    monkeypatch.undo()
    run_dir = tmp_path / "work" / "run"
    lock = tmp_path / "work" / ".run.lock"
    lock.parent.mkdir(parents=True)
    lock.mkdir()  # not a file the lock can open, as one owned by another user is not
    with pytest.raises(UserError, match="cannot take the lock"):
        with hold_run_folders([run_dir]):
            pass


def test_plots_of_a_missing_folder_or_task_are_an_error(tmp_path, capsys):
    from zaqbench.run.plots import make_plots

    assert make_plots(tmp_path / "nope", tmp_path) == 2
    assert "does not exist" in capsys.readouterr().err
    assert make_plots(tmp_path, tmp_path, ["bogus"]) == 2
    assert "no results for task(s) bogus" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["pickled", "corrupt"])
def test_plots_of_a_run_whose_generator_file_is_not_weights_are_one_line(tmp_path, capsys, content):
    import argparse

    from tests.conftest import result_row
    from zaqbench.run.cli import run_command
    from zaqbench.run.results import append_rows
    from zaqbench.run.runner import default_model, run_dir_name

    model = default_model("cls")
    append_rows(tmp_path / "results" / "cls.csv", [result_row(model=model, method="zaq", config_hash="h")])
    run = tmp_path / "work" / "cls" / model / run_dir_name("zaq", 4, 4, 0, "h")
    run.mkdir(parents=True)
    if content == "pickled":  # arbitrary objects: never unpickled, and the tool has no flag to allow it
        torch.save({"project.weight": torch.zeros(1), "meta": argparse.Namespace(lr=0.1)}, run / "generator.pth")
    else:
        (run / "generator.pth").write_text("not a checkpoint\n")
    assert run_command("plots", ["--tasks", "cls", "--results", str(tmp_path / "results"),
                                 "--work-dir", str(tmp_path / "work")]) == 2  # as tools/make_plots.py runs
    line = assert_one_error_line(capsys, "generator.pth", "delete it and rerun the ZAQ W4A4 seed-0 run")
    assert "--trust-checkpoint" not in line and "--checkpoint" not in line
