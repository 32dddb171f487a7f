"""A quantized model kept as a weights-only file and rebuilt on the FP architecture, unchanged."""
import csv

import pytest
import torch
import torchvision
from torch import nn

from zaqbench.quant.equalization import dfq_quantize
from zaqbench.errors import UserError
from zaqbench.export import load_quantized, save_quantized
from zaqbench.quant import QConfig, calibrate_activations, quantize_model


def small_mobilenet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=5).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding and equalization matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("qconfig", [QConfig(wbits=4, abits=8), QConfig(wbits=8, abits=8, bn_fold=True),
                                     QConfig.from_dict({"preset": "zaq-code"}).with_bits(4, 4)],
                         ids=["default", "bn-folded", "after-relu"])
def test_saved_and_loaded_model_computes_exactly_the_same(qconfig, tmp_path):
    model, x = small_mobilenet(), torch.randn(4, 3, 32, 32)
    qmodel, _ = quantize_model(model, qconfig, example_input=x[:1])
    calibrate_activations(qmodel, [x])
    path = save_quantized(qmodel.eval(), qconfig, tmp_path / "q.pth", (3, 32, 32), method="ptq")
    loaded = load_quantized(small_mobilenet(), path)
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))
    assert torch.load(path, weights_only=True)["info"] == {"method": "ptq"}  # plain data only


def test_dfq_structure_is_carried(tmp_path):
    model, x = small_mobilenet(), torch.randn(4, 3, 32, 32)
    qconfig = QConfig(wbits=8, abits=8)
    qmodel, report = dfq_quantize(model, qconfig, x[:1])
    assert report.equalized and report.bias_corrected  # per-channel ReLU6 ceilings and new biases to carry
    calibrate_activations(qmodel, [x])
    path = save_quantized(qmodel.eval(), qconfig, tmp_path / "q.pth", (3, 32, 32))
    with torch.no_grad():
        assert torch.equal(load_quantized(small_mobilenet(), path)(x), qmodel(x))


def test_a_foreign_file_or_architecture_is_one_line(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a zaqbench quantized model"):
        load_quantized(small_mobilenet(), tmp_path / "other.pth")
    qmodel, _ = quantize_model(small_mobilenet(), QConfig(wbits=8, abits=32))
    path = save_quantized(qmodel, QConfig(wbits=8, abits=32), tmp_path / "q.pth", (3, 32, 32))
    with pytest.raises(UserError, match="does not fit this model"):
        load_quantized(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=5), path)


def test_runner_export_reproduces_the_row(tmp_path, monkeypatch):
    from tests.conftest import ROOT
    from tests.toy_task import ToyAdapter
    from zaqbench.run.runner import main

    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    out, folder = tmp_path / "rows.csv", tmp_path / "models"
    assert main(["--task", "toy", "--config", str(ROOT / "tests" / "data" / "toy_config.py"), "--methods", "fp,ptq",
                 "--bits", "4", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--export", str(folder),
                 "--no-progress"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    [path] = sorted(folder.glob("toy_toy_config_ptq_w4a4_seed0_*.pth"))
    assert rows["ptq"]["config_hash"] in path.name
    adapter = ToyAdapter(cfg={"task": {"type": "toy", "width": 8}}, model_name="toy_config", data_root=None,
                         cache_dir=tmp_path / "cache", device=torch.device("cpu"))
    [teacher_file] = (tmp_path / "cache" / "teachers").glob("toy-*.pth")
    teacher = adapter.build_model()
    teacher.load_state_dict(torch.load(teacher_file, weights_only=True))
    loaded = load_quantized(teacher, path)
    assert adapter.evaluate(loaded)["accuracy"] == pytest.approx(float(rows["ptq"]["value"]), abs=1e-4)
