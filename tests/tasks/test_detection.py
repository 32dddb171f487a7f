"""The det adapter on a tiny RetinaNet at 64x64 over a handful of generated scenes,
the stock mmdet RetinaNet R50 config, and the shipped det configs."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from tasks.detection import DetectionAdapter  # noqa: E402
from tasks.fashion_mnist import CLASSES  # noqa: E402
from zaqbench.errors import UserError  # noqa: E402
from zaqbench.zaq.features import forward_with_features  # noqa: E402
from zaqbench.quant import QConfig, calibrate_activations, quantize_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_fashion_mnist_env")

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "det"
SIZE = 64


def tiny_cfg(name: str = "retinanet") -> Config:
    """A shipped scenes config shrunk to 64x64 inputs, 8-channel stem, 16-channel FPN/head,
    8 train / 4 val scenes, one epoch."""
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    cfg.merge_from_dict({
        "model.backbone.base_channels": 8,
        "model.neck.in_channels": [16, 32, 64],
        "model.neck.out_channels": 16,
        "model.bbox_head.in_channels": 16,
        "model.bbox_head.feat_channels": 16,
        "model.bbox_head.stacked_convs": 1,
        "train_dataloader.batch_size": 4,
        "test_dataloader.batch_size": 4,
        "train_cfg.max_epochs": 1,
        "param_scheduler": [dict(type="ConstantLR", factor=1.0, by_epoch=False)],
        "task.input_size": (SIZE, SIZE),
        "task.data": dict(scenes=True, num_train=8, num_val=4, seed=0,
                          spec=dict(size=SIZE, min_scale=12, max_scale=28)),
        "task.teacher.log_interval": 1,
    })
    if name == "fcos":
        cfg.model.bbox_head.norm_cfg = dict(type="GN", num_groups=4, requires_grad=True)
    for loader in ("train_dataloader", "test_dataloader"):
        for step in cfg[loader].dataset.pipeline:
            if step["type"] == "Resize":
                step["scale"] = (SIZE, SIZE)
    return cfg


def make_adapter(cfg: Config, cache_dir: Path, data_root: str | None = None) -> DetectionAdapter:
    return DetectionAdapter(cfg, "tiny", data_root, cache_dir, torch.device("cpu"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def adapter(cache_dir) -> DetectionAdapter:
    return make_adapter(tiny_cfg(), cache_dir)


@pytest.fixture(scope="module")
def model(adapter) -> nn.Module:
    torch.manual_seed(0)
    return adapter.build_model().eval()


class Oracle(nn.Module):
    """Predicts exactly the ground truth: its COCO mAP must be 1."""

    def test_step(self, batch):
        samples = batch["data_samples"]
        for s in samples:
            pred = copy.deepcopy(s.gt_instances)
            pred.scores = torch.ones(len(pred))
            s.pred_instances = pred
        return samples


# -- structure -----------------------------------------------------------------------
def test_raw_outputs_and_features_are_per_level_maps(adapter, model):
    x = torch.randn(2, 3, SIZE, SIZE)
    out, feats = forward_with_features(model, adapter.feature_names, adapter.forward_raw, x)
    cls_scores, bbox_preds = out
    sides = [SIZE // s for s in (8, 16, 32)]
    anchors = 9  # 3 scales x 3 ratios
    assert [tuple(t.shape) for t in cls_scores] == [(2, anchors * 10, s, s) for s in sides]
    assert [tuple(t.shape) for t in bbox_preds] == [(2, anchors * 4, s, s) for s in sides]
    assert adapter.feature_names == ["neck"]
    assert [tuple(t.shape) for t in feats] == [(2, 16, s, s) for s in sides]


def test_fcos_outputs_include_centerness(cache_dir):
    fcos = make_adapter(tiny_cfg("fcos"), cache_dir)
    out = fcos.forward_raw(fcos.build_model().eval(), torch.randn(1, 3, SIZE, SIZE))
    assert len(out) == 3 and [t.shape[1] for t in out[0]] == [10] * 3 and [t.shape[1] for t in out[2]] == [1] * 3


def test_real_batches_use_the_input_spec_normalisation(adapter):
    spec = adapter.input_spec
    batches = list(adapter.real_batches(batch_size=3, num_batches=2, seed=0))
    assert [tuple(b.shape) for b in batches] == [spec.shape(3)] * 2
    again = list(adapter.real_batches(batch_size=3, num_batches=2, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    pixels = (batches[0] * std + mean) * 255  # back to the PNG's 0..255 gray values
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
    torch.testing.assert_close(pixels, pixels.round(), atol=2e-3, rtol=0)
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2])  # gray replicated: RGB order irrelevant here


def test_real_batches_match_what_evaluate_feeds_the_model(adapter, model):
    """The generator's target normalisation equals the data preprocessor's."""
    from mmengine.dataset import pseudo_collate

    dataset = adapter._dataset("test")
    batch = model.data_preprocessor(pseudo_collate([dataset[0]]), training=False)
    x = batch["inputs"]
    mean = torch.tensor(adapter.input_spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(adapter.input_spec.std).view(1, 3, 1, 1)
    rgb = np.asarray(Image.open(dataset.get_data_info(0)["img_path"]).convert("RGB"))
    png = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(x, (png / 255 - mean) / std, atol=1e-4, rtol=0)


# -- the score --------------------------------------------------------------------------
def test_evaluate_gives_coco_map_from_cocometric(adapter, model, monkeypatch):
    from mmdet.evaluation import CocoMetric

    calls = []
    original = CocoMetric.compute_metrics
    monkeypatch.setattr(CocoMetric, "compute_metrics",
                        lambda self, results: calls.append(len(results)) or original(self, results))
    metrics = adapter.evaluate(model)
    assert calls == [4]  # mmdet's metric saw all 4 val images
    assert 0.0 <= metrics["bbox_mAP"] <= 1.0 and 0.0 <= metrics["bbox_mAP_50"] <= 1.0
    assert not model.training


def test_a_perfect_detector_scores_one_also_on_a_subset(adapter, cache_dir):
    assert adapter.evaluate(Oracle())["bbox_mAP"] == 1.0
    cfg = tiny_cfg()
    cfg.task.eval = dict(max_samples=2)  # the other images must not count as misses
    assert make_adapter(cfg, cache_dir).evaluate(Oracle())["bbox_mAP"] == 1.0


def test_repeated_evaluations_build_the_test_set_once_and_do_not_mix(cache_dir, model, monkeypatch):
    fresh = make_adapter(tiny_cfg(), cache_dir)
    built = []
    original = type(fresh)._dataset
    monkeypatch.setattr(type(fresh), "_dataset", lambda self, *a, **k: built.append(a) or original(self, *a, **k))
    first = fresh.evaluate(model)
    assert fresh.evaluate(Oracle())["bbox_mAP"] == 1.0  # no detections of the previous model left over
    assert fresh.evaluate(model) == first
    assert built == [("test",)]


# -- the teacher --------------------------------------------------------------------------
def test_train_teacher_runs_mmengine_runner_and_trains_bn(adapter, capfd):
    torch.manual_seed(0)
    model = adapter.build_model()
    before = copy.deepcopy(model.state_dict())
    adapter.train_teacher(model)
    assert "Epoch(train)" in capfd.readouterr().out  # progress on: mmengine's log lines (cf. --no-progress)
    after = model.state_dict()
    bn_mean = "backbone.bn1.running_mean"
    assert not torch.equal(before[bn_mean], after[bn_mean])  # BN statistics were updated
    assert not torch.equal(before["backbone.layer1.0.conv1.weight"], after["backbone.layer1.0.conv1.weight"])
    assert not torch.equal(before["bbox_head.retina_cls.weight"], after["bbox_head.retina_cls.weight"])
    assert not model.training


def test_no_progress_hides_runner_logs_and_coco_prints(cache_dir, capfd):
    quiet = make_adapter(tiny_cfg(), cache_dir)
    quiet.progress = False  # --no-progress
    model = quiet.build_model()
    quiet.train_teacher(model)
    MMLogger.get_instance("det-progress-off", log_level="INFO")  # quiet whatever logger is the latest
    quiet.evaluate(model)
    printed = capfd.readouterr()
    for chatter in ("System environment", "Epoch(train)", "loading annotations", "Evaluating bbox", "Average Precision"):
        assert chatter not in printed.out + printed.err, chatter
    make_adapter(tiny_cfg(), cache_dir).evaluate(model)  # progress on: the same evaluation prints them
    assert "loading annotations" in capfd.readouterr().out


def test_teacher_key_is_json_and_tracks_the_schedule(tmp_path):
    cfg = tiny_cfg()
    key = make_adapter(cfg, tmp_path).teacher_key()
    json.dumps(key, sort_keys=True)
    cfg.train_cfg.max_epochs = 2
    assert make_adapter(cfg, tmp_path).teacher_key() != key
    assert not any(tmp_path.iterdir())  # computing the key builds no data


# -- quantization and the ZAQ loop ----------------------------------------------------------
def test_shipped_quant_config_keeps_head_outputs_and_stem_in_fp(adapter, model):
    qmodel, info = quantize_model(model, QConfig.from_dict(dict(adapter.cfg.quant)))
    assert info["full_precision"] == ["backbone.conv1", "bbox_head.retina_cls", "bbox_head.retina_reg"]
    assert "neck.fpn_convs.0.conv" in info["quantized"] and "bbox_head.cls_convs.0.conv" in info["quantized"]
    calibrate_activations(qmodel, [torch.randn(1, 3, SIZE, SIZE)], adapter.forward_raw)
    out = adapter.forward_raw(qmodel.eval(), torch.randn(1, 3, SIZE, SIZE))
    assert [t.shape for t in out[0]] == [t.shape for t in adapter.forward_raw(model, torch.randn(1, 3, SIZE, SIZE))[0]]


def test_two_zaq_iterations_change_q(adapter, model, tmp_path):
    from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer

    qmodel, _ = quantize_model(model, QConfig.from_dict(dict(adapter.cfg.quant)))
    before = {k: v.clone() for k, v in qmodel.state_dict().items()}
    cfg = ZAQConfig(iters=2, q_steps=1, batch_size=2, nz=16, generator_channels=8, calib_batches=1,
                    checkpoint_interval=1)
    trained = ZAQTrainer(adapter, copy.deepcopy(model), qmodel, cfg, tmp_path, seed=0, progress=False).run()
    changed = [k for k, v in trained.state_dict().items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert "neck.fpn_convs.0.conv.weight" in changed and "bbox_head.cls_convs.0.conv.weight" in changed


# -- the stock mmdet RetinaNet R50 -------------------------------------------------------------
@pytest.mark.slow
def test_stock_retinanet_r50_builds_quantizes_and_runs_a_zaq_iteration(tmp_path):
    from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer

    cfg = Config.fromfile(str(CONFIGS / "retinanet_r50_coco.py"))
    assert cfg.model.bbox_head.num_classes == 80 and cfg.model.backbone.depth == 50
    cfg.task.input_size = (SIZE, SIZE)  # generated images; the stock config is otherwise untouched
    det = make_adapter(cfg, tmp_path)
    torch.manual_seed(0)
    model = det.build_model().eval()
    qmodel, info = quantize_model(model, QConfig.from_dict(dict(cfg.quant)))
    assert {"backbone.conv1", "bbox_head.retina_cls", "bbox_head.retina_reg"} == set(info["full_precision"])
    assert len(info["quantized"]) > 50
    calibrate_activations(qmodel, [torch.randn(1, 3, SIZE, SIZE)], det.forward_raw)
    cls_scores, bbox_preds = det.forward_raw(qmodel.eval(), torch.randn(1, 3, SIZE, SIZE))
    assert len(cls_scores) == len(bbox_preds) == 5 and cls_scores[0].shape == (1, 9 * 80, SIZE // 8, SIZE // 8)
    before = qmodel.bbox_head.cls_convs[0].conv.weight.detach().clone()
    zaq = ZAQConfig(iters=1, q_steps=1, batch_size=1, nz=8, generator_channels=8, calib_batches=1)
    trainer = ZAQTrainer(det, model, qmodel, zaq, tmp_path, seed=0, progress=False)
    trainer.calibrate(1)  # what run() does first
    losses = trainer.step()  # one engine iteration (run() would also write a 300 MB checkpoint)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert not torch.equal(qmodel.bbox_head.cls_convs[0].conv.weight, before)


# -- the shipped configs ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["retinanet", "fcos"])
def test_shipped_scene_configs_build_and_quantize(name, tmp_path):
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    assert cfg.train_dataloader.dataset.metainfo["classes"] == CLASSES
    assert set(cfg.methods) >= {"zaq", "ptq", "zeroq", "real-ptq"}
    det = make_adapter(cfg, tmp_path)
    model = det.build_model().eval()
    assert not [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine]
    _, info = quantize_model(model, QConfig.from_dict(dict(cfg.quant)))
    assert info["full_precision"][0] == "backbone.conv1" and len(info["full_precision"]) == 1 + len(cfg.quant.fp_layers)
    out = det.forward_raw(model, torch.randn(1, *det.input_spec.shape(1)[1:]))
    assert len(out[0]) == 3


def test_syncbn_configs_build_plain_bn(tmp_path):
    cfg = tiny_cfg()
    cfg.model.backbone.norm_cfg = dict(type="SyncBN", requires_grad=True)
    model = make_adapter(cfg, tmp_path).build_model()
    assert not [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.backbone.modules())
    model.train()(torch.randn(2, 3, SIZE, SIZE), mode="tensor")  # SyncBN would need a process group here


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_detector_type_is_a_user_error(tmp_path):
    cfg = tiny_cfg()
    cfg.model.type = "NoSuchDetector"
    with pytest.raises(UserError, match="cannot build the detector of config 'tiny'"):
        make_adapter(cfg, tmp_path).build_model()


def test_config_without_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no 'model' section"):
        make_adapter(Config(dict(task=dict(type="det"))), tmp_path)


@pytest.mark.parametrize("size", [(66, 64), (64, 30), (64,), "64"])
def test_input_size_the_generator_cannot_produce_is_a_user_error(tmp_path, size):
    cfg = tiny_cfg()
    cfg.task.input_size = size
    with pytest.raises(UserError, match="input_size"):
        make_adapter(cfg, tmp_path)


def test_unknown_feature_module_is_a_user_error(tmp_path):
    cfg = tiny_cfg()
    cfg.task.features = ["neck", "no_such_module"]
    with pytest.raises(UserError, match="no_such_module"):
        make_adapter(cfg, tmp_path).build_model()


def test_missing_annotation_file_is_a_user_error(tmp_path):
    cfg = tiny_cfg()
    cfg.task.data = dict(scenes=False)  # --data-root is the config's COCO dataset
    with pytest.raises(UserError, match="annotations/instances_val.json' not found"):
        make_adapter(cfg, tmp_path, data_root=str(tmp_path)).evaluate(Oracle())


@pytest.mark.parametrize("content", ["{not json", json.dumps({"images": []}), json.dumps([1, 2])])
def test_malformed_annotation_file_is_a_user_error(tmp_path, content):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(content)
    with pytest.raises(UserError, match="instances_val.json"):
        make_adapter(tiny_cfg(), tmp_path, data_root=str(tmp_path)).evaluate(Oracle())


def test_missing_data_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        make_adapter(tiny_cfg(), tmp_path, data_root=str(tmp_path / "nope")).evaluate(Oracle())


def test_coco_config_without_data_root_says_to_pass_one(tmp_path):
    cfg = Config.fromfile(str(CONFIGS / "retinanet_r50_coco.py"))
    with pytest.raises(UserError, match="--data-root"):
        make_adapter(cfg, tmp_path).evaluate(Oracle())


@pytest.mark.parametrize("data, match", [
    (dict(spec=dict(size=96)), "must equal the scene size"),
    (dict(spec=dict(size=64, colour=True)), "task.data.spec"),
])
def test_bad_scene_settings_are_user_errors(tmp_path, data, match):
    cfg = tiny_cfg()
    cfg.task.data = data
    with pytest.raises(UserError, match=match):
        make_adapter(cfg, tmp_path).teacher_key()


# -- the settings det shares with seg (tasks/mm_base.py) ----------------------------------------
def plan_of(tmp_path: Path, monkeypatch, *args: str):
    """The runner's plan (every check, no work) of a det run on the embedded data."""
    import tasks  # noqa: F401 - registers the adapters
    import zaqbench.methods  # noqa: F401 - registers the methods
    from zaqbench.run.runner import build_parser, build_plan

    monkeypatch.delenv("ZAQBENCH_DATA", raising=False)
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return build_plan(build_parser().parse_args(["--task", "det", "--out", str(tmp_path / "out.csv"),
                                                 "--device", "cpu", *args]))


def test_shipped_config_keeps_the_config_hash_of_its_committed_rows(tmp_path, monkeypatch):
    """The task section is hashed with the embedded-data switch spelled as the rows were hashed."""
    import csv

    with open(CONFIGS.parents[1] / "results" / "det.csv", newline="") as f:
        committed = {row["config_hash"] for row in csv.DictReader(f)
                     if row["model"] == "retinanet" and row["method"] == "fp"}
    plan = plan_of(tmp_path, monkeypatch, "--model", "retinanet", "--method", "fp")
    assert committed == {plan.jobs[0].config_hash}
    task = plan.adapter.task_for_hash(dict(plan.cfg.task))
    assert task["data"]["source"] == "scenes" and "scenes" not in task["data"]


def test_stock_config_on_the_embedded_scenes_names_the_scenes_base(tmp_path, monkeypatch):
    """A stock mmdet config without --data-root stops in the plan, before any scene is built, and
    says what the embedded scenes need (not that a --data-root nobody gave lacks a file)."""
    config = tmp_path / "stock.py"
    config.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                      "model = dict(backbone=dict(init_cfg=None))\n")
    with pytest.raises(UserError) as err:
        plan_of(tmp_path, monkeypatch, "--config", str(config), "--method", "fp")
    message = str(err.value)
    assert "configs/det/_base_/scenes_coco.py" in message and "configs/det/retinanet.py" in message
    assert "instances_train2017.json" in message and "task.data.scenes=False" in message
    assert "must contain" not in message and "\n" not in message
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("section, old, new", [("data", "source", "task.data.scenes"),
                                                ("eval", "num_workers", "task.eval.workers"),
                                                ("teacher", "num_workers", "task.teacher.workers")])
def test_a_field_spelled_otherwise_names_the_one_to_use(tmp_path, section, old, new):
    cfg = tiny_cfg()
    cfg.task[section] = {old: "scenes" if old == "source" else 2}
    with pytest.raises(UserError, match=rf"task\.{section}\.{old} is not a field; use {new}"):
        make_adapter(cfg, tmp_path)


@pytest.mark.parametrize("task, match", [
    (dict(eval=dict(workers=-1)), "task.eval.workers=-1 is not valid"),
    (dict(teacher=dict(workers=True)), "task.teacher.workers=True is not valid"),
    (dict(eval=dict(batch_sise=4)), "unknown field task.eval.batch_sise"),
    (dict(data=dict(scenes="yes")), "task.data.scenes='yes' must be True"),
    (dict(data=dict(spec="size=64")), "task.data.spec='size=64' must be a dict"),
])
def test_bad_shared_fields_are_user_errors(tmp_path, task, match):
    cfg = tiny_cfg()
    cfg.task.update(task)
    with pytest.raises(UserError, match=re.escape(match)):
        make_adapter(cfg, tmp_path).check()


@pytest.mark.parametrize("cores, started", [(2, 0), (4, 3), (16, 4)])
def test_loader_workers_follow_the_cores_and_stay_out_of_the_teacher_key(tmp_path, monkeypatch, cores, started):
    from zaqbench import devices

    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    cfg = tiny_cfg()
    cfg.task.eval.workers = 4
    det = make_adapter(cfg, tmp_path)
    assert det._test_dataloader().num_workers == started
    assert make_adapter(tiny_cfg(), tmp_path)._test_dataloader().num_workers == 0  # the config's num_workers
    key = det.teacher_key()
    cfg.task.teacher.workers = 4
    assert make_adapter(cfg, tmp_path).teacher_key() == key


def test_data_root_names_fashion_mnist_or_holds_the_scenes(tmp_path, fmnist_root):
    """One rule for det and seg: with the embedded scenes, --data-root is either a copy of the scenes
    (read as they are) or Fashion-MNIST (the scenes are built from it into the cache)."""
    built = make_adapter(tiny_cfg(), tmp_path / "cache", data_root=str(fmnist_root))
    assert built.builds_scenes and built.root.parent == tmp_path / "cache"
    assert built.dataset_name == "fmnist-scenes"
    copy_of_scenes = make_adapter(tiny_cfg(), tmp_path / "other", data_root=str(built.root))
    assert not copy_of_scenes.builds_scenes and copy_of_scenes.root == built.root
    assert copy_of_scenes.evaluate(Oracle())["bbox_mAP"] == 1.0
