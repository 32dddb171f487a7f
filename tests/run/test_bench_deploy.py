"""``zaqbench bench-deploy`` on a tiny setting: one CSV row per model, precision, batch and thread
count, with the kernels onnxruntime chose; bad options are one line before any export."""
from __future__ import annotations

import csv

import pytest

import tasks  # noqa: F401 - registers the built-in tasks, as the zaqbench command does
from zaqbench.run.bench_deploy import COLUMNS, main


@pytest.mark.slow
def test_fp32_and_w8a8_rows_with_the_kernels_used(tmp_path, capsys):
    out = tmp_path / "deploy" / "latency.csv"
    assert main(["--models", "cls:resnet20", "--batch-sizes", "1,2", "--threads", "1", "--rounds", "2",
                 "--repeats", "1", "--warmup", "0", "--out", str(out), "--cfg-options", "task.model.width=4"]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS
    assert [(r["precision"], r["batch"], r["threads"]) for r in rows] == [
        ("fp32", "1", "1"), ("fp32", "2", "1"), ("w8a8", "1", "1"), ("w8a8", "2", "1")]
    for r in rows:
        assert float(r["latency_ms"]) > 0 and r["timed_runs"] == "2" and r["runtime"].startswith("onnxruntime-")
    fp32, w8a8 = rows[0], rows[2]
    assert fp32["qlinear_convs"] == "0" and int(fp32["float_convs"]) == 21  # ResNet-20: 21 convolutions
    # W8A8 with BN folded: the convolutions whose output is quantized next run as QLinearConv
    assert int(w8a8["qlinear_convs"]) > 0 and "QLinearConv" in w8a8["kernels"]
    assert w8a8["graph"] == "W8:int8 QDQ per-channel/A8:uint8 QDQ"
    assert "speed-up vs fp32" in capsys.readouterr().out


@pytest.mark.parametrize("option, needle", [
    (["--models", "cls"], "is not task:config"),
    (["--models", "cls:nope"], "unknown model 'nope'"),
    (["--threads", "0"], "--threads"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--opset", "13"], "too old"),
    (["--rounds", "0"], "--rounds"),
])
def test_bad_options_are_one_line_before_any_export(option, needle, tmp_path, capsys):
    out = tmp_path / "latency.csv"
    assert main([*option, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
