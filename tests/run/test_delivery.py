"""The runner's --export and --deploy-eval: the ONNX graph beside the weights-only file, its
onnxruntime score in the row, every refusal before any work, and no row lost to a failed export."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.run.test_bad_input import TOY, assert_nothing_written, assert_one_error_line, rows_of, run_toy, toy  # noqa: F401
from tests.run.test_runner import TINY
from zaqbench.deploy.runtime import OrtGraph
from zaqbench.run.results import parse_deployment, parse_extra_metrics
from zaqbench.run.runner import main, run_dir_name


def deployed(row: dict[str, str]) -> dict[str, str]:
    return parse_deployment(row["extra_metrics"])


@pytest.mark.slow
def test_cls_deployed_top1_matches_the_simulated_one(tmp_path, monkeypatch, fmnist_root, capsys):
    """ResNet-20 (width 4) on the tiny Fashion-MNIST: W8A8 deployed = simulated within 0.1 point."""
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    out, work = tmp_path / "out.csv", tmp_path / "work"
    assert main(["--task", "cls", "--model", "resnet20", "--data-root", str(fmnist_root), "--out", str(out),
                 "--work-dir", str(work), "--no-progress", "--method", "fp,ptq", "--bits", "8,4", "--deploy-eval",
                 "--cfg-options", *TINY]) == 0
    rows = {r["wbits"]: r for r in rows_of(out)}
    assert deployed(rows["32"]) == {}  # the full-precision row has nothing deployed
    for bits in ("8", "4"):
        info = deployed(rows[bits])
        gap = float(info["value"]) - float(rows[bits]["value"])
        print(f"cls W{bits}A{bits}: simulated {rows[bits]['value']}, deployed {info['value']}, gap {gap:+.2f}")
        assert abs(gap) <= (0.1 if bits == "8" else 2.5)  # W4A4: within one of the 48 test images
        assert info["runtime"].startswith("onnxruntime-") and info["opset"] == "21" and info["threads"] == "1"
        assert info["graph"].startswith(f"W{bits}:int") and info["cpu"]
        metrics, _ = parse_extra_metrics(rows[bits]["extra_metrics"])
        assert metrics["deployed_value"] == float(info["value"])
        folder = work / "cls" / "resnet20" / run_dir_name("ptq", int(bits), int(bits), 0, rows[bits]["config_hash"])
        assert (folder / "model.pth").is_file() and (folder / "model.onnx").is_file()  # no --export: the run folder


def test_export_writes_the_graph_beside_the_weights_with_the_rows_identity(toy, capsys):
    folder = toy["tmp"] / "models"
    assert run_toy(toy, "--method", "fp,ptq", "--bits", "8", "--export", str(folder)) == 0
    [row] = [r for r in rows_of(toy["out"]) if r["method"] == "ptq"]
    assert deployed(row) == {}  # --export alone: files, no deployed score
    stem = f"toy_toy_config_ptq_w8a8_seed0_{row['config_hash']}"
    assert sorted(p.name for p in folder.iterdir()) == [f"{stem}.onnx", f"{stem}.pth"]
    meta = OrtGraph(folder / f"{stem}.onnx").metadata
    assert meta["config_hash"] == row["config_hash"] and float(meta["value"]) == float(row["value"])
    assert meta["input_mean"] == "[0.0]" and meta["representation"] == "W8:int8 QDQ per-channel/A8:uint8 QDQ"
    assert onnx.load(folder / f"{stem}.onnx").opset_import[0].version == 21


def test_zaq_code_preset_exports_weights_only_with_a_warning(toy, capsys):
    folder = toy["tmp"] / "models"
    assert run_toy(toy, "--method", "ptq", "--bits", "8", "--quant-preset", "zaq-code", "--export", str(folder)) == 0
    assert "warning: --export writes the weights-only file but no ONNX graph" in capsys.readouterr().err
    assert [p.suffix for p in folder.iterdir()] == [".pth"]


# -- refused before any work -------------------------------------------------------------------
@pytest.mark.parametrize("extra, needles", [
    (["--deploy-eval", "--onnx-opset", "13"], ["--onnx-opset 13", "too old"]),
    (["--export", "{tmp}/m", "--onnx-opset", "99"], ["--onnx-opset 99", "newer than the installed onnx defines"]),
    (["--onnx-opset", "21"], ["--onnx-opset", "with --export DIR or --deploy-eval"]),
    (["--deploy-eval", "--quant-preset", "zaq-code"], ["ptq W8A8", "zaq-code", "QuantizeLinear cannot express"]),
    (["--deploy-eval", "--export", "{tmp}/file/sub"], ["--export", "not a directory"]),
    (["--deploy-eval", "--export", "{tmp}/file"], ["--export", "not a directory"]),
])
def test_bad_deployment_options_are_one_line_before_any_work(toy, capsys, extra, needles):
    (toy["tmp"] / "file").write_text("not a folder")
    extra = [e.format(tmp=toy["tmp"]) for e in extra]
    assert run_toy(toy, "--method", "fp,ptq", "--bits", "8", *extra) == 2
    assert_one_error_line(capsys, *needles)
    assert_nothing_written(toy)


def test_a_bit_width_the_runtime_cannot_run_is_one_line_before_any_work(toy, capsys, monkeypatch):
    from zaqbench.deploy import onnx_export

    monkeypatch.setitem(onnx_export.RUNTIME_CHECKS, (onnx_export.GridStorage(0, 63, "uint8", True), 21), "no kernel")
    assert run_toy(toy, "--method", "fp,ptq", "--bits", "8,6", "--deploy-eval") == 2
    assert_one_error_line(capsys, "ptq W6A6", "cannot run 6-bit uint8 QDQ + Clip[0..63] at opset 21")
    assert_nothing_written(toy)


def test_an_export_folder_that_denies_writing_is_refused_before_any_work(toy, capsys, monkeypatch):
    locked = toy["tmp"] / "locked"
    locked.mkdir(mode=0o500)
    real_access = os.access
    # as root every folder is writable: the check is what a user without the permission meets
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    assert run_toy(toy, "--method", "fp,ptq", "--bits", "8", "--deploy-eval", "--export", str(locked / "m")) == 2
    assert_one_error_line(capsys, "--export", "not writable")
    assert_nothing_written(toy)


# -- a failed export never costs the row -------------------------------------------------------
def test_a_graph_that_cannot_be_written_keeps_the_row_and_says_what_to_do(toy, capsys):
    folder = toy["tmp"] / "models"
    folder.mkdir()
    # a folder where the graph must go: the weights-only file is written, the graph is not
    from zaqbench.run.runner import build_parser, build_plan

    plan = build_plan(build_parser().parse_args(["--task", "toy", "--config", TOY, "--method", "ptq", "--bits", "8",
                                                 "--out", str(toy["tmp"] / "probe.csv")]))
    stem = f"toy_toy_config_ptq_w8a8_seed0_{plan.jobs[0].config_hash}"
    (folder / f"{stem}.onnx").mkdir()
    assert run_toy(toy, "--method", "ptq", "--bits", "8", "--export", str(folder), "--deploy-eval") == 1
    err = assert_one_error_line(capsys, "ptq W8A8: export failed", "its row is written without a deployed value",
                                f"kept in {folder / (stem + '.pth')}", "zaqbench.load_quantized")
    assert "Traceback" not in err
    [row] = rows_of(toy["out"])
    assert row["method"] == "ptq" and deployed(row) == {}
    assert (folder / f"{stem}.pth").is_file()
