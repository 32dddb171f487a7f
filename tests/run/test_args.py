"""One command-line vocabulary: every sub-command takes its flags from one table, a list flag is
plural and read by the one list parser, and a singular never stands for a plural by accident."""
from __future__ import annotations

import argparse
from importlib import import_module

import pytest

from zaqbench.run.args import FLAGS, OneLineParser, add_args
from zaqbench.run.cli import COMMANDS, main

PARSERS = {name: import_module(module).build_parser() for name, (module, _) in COMMANDS.items()}


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_shared_word_is_the_vocabulary_s_flag_and_abbreviations_are_refused(command):
    parser = PARSERS[command]
    assert isinstance(parser, OneLineParser) and not parser.allow_abbrev
    spellings = {s: name for name, (strings, _) in FLAGS.items() for s in strings}
    own = flags(parser)
    for flag, action in own.items():
        if flag in spellings:  # a vocabulary word: defined there, under its own name
            assert action.dest == spellings[flag], (command, flag)
        singular = flag[:-1]
        if flag.endswith("s") and singular in own:  # both forms: only as one flag (--method for --methods)
            assert own[singular] is action, (command, flag)
    for name in ("--seed", "--task") if command in ("grid", "plots") else ("--seed",):
        assert name not in own, (command, name)


def test_the_plural_is_documented_and_method_is_the_same_flag():
    run = PARSERS["run"]
    assert run.parse_args(["--task", "cls", "--method", "zaq"]).methods == "zaq"
    assert run.parse_args(["--task", "cls", "--methods", "fp,zaq"]).methods == "fp,zaq"
    assert "--methods METHODS, --method METHODS" in run.format_help()


def test_probes_take_only_the_flags_that_name_a_curve_run():
    curve, probes = flags(PARSERS["curve"]), flags(PARSERS["probes"])
    assert {"--resume", "--skip-existing", "--dry-run", "--no-plot"} <= set(curve)
    assert not {"--resume", "--skip-existing", "--dry-run", "--no-plot", "--export"} & set(probes)
    assert set(curve) - {"--resume", "--skip-existing", "--dry-run", "--no-plot"} == set(probes) - {"--probe-batches", "--selection-z"}


def test_bench_takes_bit_width_lists_and_defaults_to_auto_like_every_command():
    bench = PARSERS["bench"]
    assert bench.parse_args([]).device == PARSERS["run"].parse_args(["--task", "cls"]).device == "auto"
    assert bench.parse_args(["--bits", "8,4"]).bits == "8,4"


@pytest.mark.parametrize("argv, needle", [
    (["run", "--task", "cls", "--seeds", "0,0"], "--seeds '0,0' repeats 0"),
    (["run", "--task", "cls", "--methods", "fp,fp"], "--methods 'fp,fp' repeats fp"),
    (["curve", "--task", "cls", "--bits", "4,4"], "--bits '4,4' repeats 4"),
    (["probes", "--task", "cls", "--seeds", "1,1"], "--seeds '1,1' repeats 1"),
    (["grid", "--tasks", "cls,cls", "--dry-run"], "--tasks 'cls,cls' repeats cls"),
    (["plots", "--tasks", "cls,cls"], "--tasks 'cls,cls' repeats cls"),
    (["bench", "--bits", "4,4"], "--bits '4,4' repeats 4"),
    (["bench", "--bits", "9"], "--bits=9 is not valid"),
])
def test_a_repeat_or_a_bad_item_is_one_line_in_every_command(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    assert main([*argv, *(["--out", str(tmp_path / "o.csv")] if argv[0] in ("run", "curve", "probes") else [])]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], errors


def test_a_command_overrides_only_a_flag_s_default_or_help():
    p = add_args(OneLineParser(), "bits", bits=dict(default="8"))
    assert p.parse_args([]).bits == "8" and FLAGS["bits"][1]["default"] is None


def test_run_takes_a_list_of_seeds_with_one_teacher(tmp_path, monkeypatch, capsys):
    import csv

    from tests.conftest import ROOT
    from zaqbench.run.runner import main as run

    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out.csv"
    args = ["--task", "toy", "--config", str(ROOT / "tests" / "data" / "toy_config.py"), "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--no-progress", "--methods", "ptq", "--bits", "8,4"]
    assert run([*args, "--seeds", "1,0"]) == 0
    with open(out) as f:
        assert [(r["seed"], r["wbits"]) for r in csv.DictReader(f)] == [("1", "8"), ("1", "4"), ("0", "8"), ("0", "4")]
    assert len(list((tmp_path / "cache" / "teachers").glob("*.pth"))) == 1
    capsys.readouterr()
    assert run([*args, "--seeds", "0,2", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "W8A8 seed 0" in listing and "W4A4 seed 2" in listing and "(2/4 done;" in listing
