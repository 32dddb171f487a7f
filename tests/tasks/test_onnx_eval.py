"""Deployed scoring of a tiny RetinaNet and a tiny DeepLabV3: the exported graph's raw outputs go
through the model's own post-processing and the task's metric, and score what the fake-quantized
model scores."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from tasks.onnx_eval import DeployedDetector, DeployedSegmentor  # noqa: E402
from tests.tasks.test_detection import make_adapter as make_det_adapter  # noqa: E402
from tests.tasks.test_detection import tiny_cfg  # noqa: E402
from tests.tasks.test_segmentation import tiny_deeplabv3_config  # noqa: E402
from tasks.segmentation import SegmentationAdapter  # noqa: E402
from zaqbench.deploy import export_onnx  # noqa: E402
from zaqbench.deploy.runtime import OrtGraph  # noqa: E402
from zaqbench.errors import UserError  # noqa: E402
from zaqbench.quant import QConfig, calibrate_activations, quantize_model  # noqa: E402

pytestmark = [pytest.mark.mm, pytest.mark.usefixtures("tiny_fashion_mnist_env")]
#: deployed against simulated, at W8A8: the gaps the deployed numbers are held to
TOLERANCE = {"bbox_mAP": 0.002, "mIoU": 0.1}


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    """A tiny RetinaNet trained on 32 scenes for 25 epochs (about 20 s; fewer leave its mAP at 0), every
    box kept (score_thr 0: the metric sees them all)."""
    cfg = tiny_cfg()
    cfg.model.test_cfg.score_thr = 0.0
    cfg.merge_from_dict({"task.data.num_train": 32, "train_cfg.max_epochs": 25, "optim_wrapper.optimizer.lr": 0.01})
    adapter = make_det_adapter(cfg, tmp_path_factory.mktemp("det-cache"))
    adapter.progress = False
    torch.manual_seed(0)
    model = adapter.build_model()
    adapter.train_teacher(model)
    return adapter, model.eval()


@pytest.fixture(scope="module")
def seg(tmp_path_factory, fmnist_root):
    adapter = SegmentationAdapter(tiny_deeplabv3_config(), "tiny", str(fmnist_root),
                                  tmp_path_factory.mktemp("seg-cache"), torch.device("cpu"))
    adapter.progress = False
    torch.manual_seed(0)
    model = adapter.build_model()
    adapter.train_teacher(model)
    return adapter, model.eval()


def quantized(adapter, model: nn.Module, bits: int) -> tuple[nn.Module, QConfig]:
    qconfig = QConfig.from_dict(dict(adapter.cfg.get("quant", {}))).with_bits(bits, bits)
    qmodel, _ = quantize_model(model, qconfig, example_input=torch.zeros(1, *adapter.input_spec.shape(1)[1:]))
    calibrate_activations(qmodel, adapter.real_batches(4, 2, seed=0), forward=adapter.forward_raw)
    return qmodel.eval(), qconfig


def first_batch(adapter) -> dict:
    return copy.deepcopy(next(iter(adapter._test_dataloader())))


@pytest.mark.slow
def test_deployed_detector_is_the_detectors_own_post_processing(det):
    """With the torch network as the 'graph', the stand-in returns exactly the detector's predictions."""
    adapter, model = det
    qmodel, _ = quantized(adapter, model, 8)
    stand_in = adapter.deployed_model(qmodel, lambda x: adapter.forward_raw(qmodel, x))
    with torch.no_grad():
        ours, theirs = stand_in.test_step(first_batch(adapter)), qmodel.test_step(first_batch(adapter))
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert len(a.pred_instances) > 0
        for key in ("bboxes", "scores", "labels"):
            assert torch.equal(a.pred_instances[key], b.pred_instances[key])


def test_deployed_segmentor_is_the_segmentors_own_post_processing(seg):
    adapter, model = seg
    qmodel, _ = quantized(adapter, model, 8)
    stand_in = adapter.deployed_model(qmodel, lambda x: adapter.forward_raw(qmodel, x))
    with torch.no_grad():
        ours, theirs = stand_in.test_step(first_batch(adapter)), qmodel.test_step(first_batch(adapter))
    for a, b in zip(ours, theirs):
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
        assert a.pred_sem_seg.data.shape[-2:] == a.gt_sem_seg.data.shape[-2:]


@pytest.mark.parametrize("task, bits", [pytest.param("det", 8, marks=pytest.mark.slow), ("seg", 8),
                                        pytest.param("det", 4, marks=pytest.mark.slow),
                                        pytest.param("seg", 4, marks=pytest.mark.slow)])
def test_deployed_score_matches_the_simulated_one(task, bits, det, seg, tmp_path):
    adapter, model = det if task == "det" else seg
    qmodel, qconfig = quantized(adapter, model, bits)
    example = torch.randn(2, *adapter.input_spec.shape(1)[1:], generator=torch.Generator().manual_seed(0))
    exported = export_onnx(qmodel, qconfig, tmp_path / "model.onnx", example, raw=adapter.forward_raw)
    simulated = adapter.evaluate(qmodel)
    deployed = adapter.evaluate(adapter.deployed_model(qmodel, OrtGraph(exported.path).raw))
    keys = [adapter.metric] + (["bbox_mAP_50"] if task == "det" else [])
    for key in keys:
        print(f"{task} W{bits}A{bits} {key}: simulated {simulated[key]:.4f}, deployed {deployed[key]:.4f}, "
              f"gap {deployed[key] - simulated[key]:+.4f} ({exported.representation})")
    assert simulated[adapter.metric] > 0  # a score that can move
    tolerance = TOLERANCE[adapter.metric] * (1 if bits == 8 else 10)  # W4A4: steps 16x coarser; a looser bound
    for key in keys:
        assert abs(deployed[key] - simulated[key]) <= tolerance


def test_what_cannot_be_scored_deployed_is_refused(seg):
    adapter, model = seg
    with pytest.raises(UserError, match="single-stage"):
        DeployedDetector(nn.Conv2d(1, 1, 1), lambda x: x)
    with pytest.raises(UserError, match="EncoderDecoder"):
        DeployedSegmentor(nn.Conv2d(1, 1, 1), lambda x: x)
    sliding = copy.deepcopy(model)
    sliding.test_cfg = dict(mode="slide", crop_size=(32, 32), stride=(16, 16))
    with pytest.raises(UserError, match="model.test_cfg.mode=whole"):
        adapter.deployed_model(sliding, lambda x: x)
