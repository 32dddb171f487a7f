"""The mmseg segmentation adapter on a tiny DeepLabV3 at 64x64 and a handful of scenes."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("mmseg")

from mmengine.config import Config  # noqa: E402

from tasks.scenes import SceneSpec, generate_scenes, write_mmseg  # noqa: E402
from tasks.segmentation import SCENE_CLASSES, SegmentationAdapter  # noqa: E402
from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer  # noqa: E402
from zaqbench.errors import UserError  # noqa: E402
from zaqbench.zaq.features import forward_with_features  # noqa: E402
from zaqbench.quant import QConfig, quantize_model  # noqa: E402
from zaqbench.registry import build_method  # noqa: E402
import zaqbench.methods  # noqa: E402,F401 - registers the methods
from zaqbench.run.teacher import load_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
SPEC = dict(size=SIZE, min_scale=12, max_scale=28)
MEAN, STD = 16.33, 51.10


def tiny_deeplabv3_config(**task_overrides) -> Config:
    """The default config's structure, shrunk: 8..64 channels, 64x64, 3 teacher iterations."""
    norm = dict(type="BN", requires_grad=True)
    data = dict(type="FashionScenesDataset", data_root="unused",
                data_prefix=dict(img_path="img_dir/{}", seg_map_path="ann_dir/{}"))
    load = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]

    def loader(split, pipeline, sampler):
        prefix = {k: v.format(split) for k, v in data["data_prefix"].items()}
        return dict(batch_size=4, num_workers=0, sampler=dict(type=sampler, shuffle=split == "train"),
                    dataset=dict(data, data_prefix=prefix, pipeline=load + pipeline))

    task = dict(type="seg", input_size=(SIZE, SIZE), eval=dict(max_samples=None), teacher=dict(seed=0),
                data=dict(scenes=True, num_train=8, num_val=4, seed=0, spec=SPEC))
    task.update(task_overrides)
    return Config(dict(
        model=dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[MEAN] * 3, std=[STD] * 3,
                                   bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(SIZE, SIZE)),
            backbone=dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, num_stages=4,
                          out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                          norm_cfg=norm, norm_eval=False, contract_dilation=True),
            decode_head=dict(type="ASPPHead", in_channels=64, in_index=3, channels=16, dilations=(1, 2, 3),
                             dropout_ratio=0.1, num_classes=len(SCENE_CLASSES), norm_cfg=norm,
                             align_corners=False,
                             loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
            train_cfg=dict(), test_cfg=dict(mode="whole")),
        train_dataloader=loader("train", [dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")],
                                "InfiniteSampler"),
        test_dataloader=loader("val", [dict(type="PackSegInputs")], "DefaultSampler"),
        test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3)),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=3),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=1), timer=dict(type="IterTimerHook")),
        log_processor=dict(by_epoch=False),
        task=task,
        quant=dict(preset="default", last_fp=False, fp_layers=["decode_head.conv_seg"]),
    ))


def make_adapter(tmp_path: Path, data_root, cfg: Config | None = None) -> SegmentationAdapter:
    return SegmentationAdapter(cfg or tiny_deeplabv3_config(), "tiny", str(data_root), tmp_path / "cache",
                               torch.device("cpu"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("seg-cache")


@pytest.fixture
def adapter(fmnist_root, cache) -> SegmentationAdapter:
    return SegmentationAdapter(tiny_deeplabv3_config(), "tiny", str(fmnist_root), cache, torch.device("cpu"))


@pytest.fixture
def scenes_copy(adapter, tmp_path) -> Path:
    """A private copy of the built scenes (mmseg layout) that a test may damage."""
    return Path(shutil.copytree(adapter.root, tmp_path / "scenes"))


# -- model, input, features, outputs ---------------------------------------------------------
def test_features_and_logits_have_the_expected_shapes(adapter):
    model = adapter.build_model().eval()
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    x = torch.randn(adapter.input_spec.shape(2))
    out, feats = forward_with_features(model, adapter.feature_names, adapter.forward_raw, x)
    assert out.shape == (2, len(SCENE_CLASSES), 8, 8)  # stride-8 logits, one per class
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 8, 8), (2, 64, 8, 8)]
    spec = adapter.input_spec
    assert (spec.height, spec.width) == (SIZE, SIZE)
    assert spec.mean == pytest.approx((MEAN / 255,) * 3) and spec.std == pytest.approx((STD / 255,) * 3)


def test_real_batches_are_normalised_like_the_preprocessor_and_seeded(adapter):
    batches = list(adapter.real_batches(batch_size=3, num_batches=4, seed=1))  # 8 images: cycles
    assert [tuple(b.shape) for b in batches] == [(3, 3, SIZE, SIZE)] * 4
    assert batches[0].min().item() == pytest.approx(-MEAN / STD, abs=1e-4)  # black background
    assert batches[0].max().item() <= (255 - MEAN) / STD + 1e-4
    again = list(adapter.real_batches(batch_size=3, num_batches=4, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_train_teacher_runs_mmseg_loop_and_trains_bn(adapter, capfd):
    model = adapter.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter.train_teacher(model)
    assert "Iter(train)" in capfd.readouterr().out  # progress on: mmengine's log lines (cf. --no-progress)
    bn = model.backbone.layer1[0].bn1
    assert not torch.equal(bn.running_mean, before["backbone.layer1.0.bn1.running_mean"])
    assert int(bn.num_batches_tracked) == 3
    assert not torch.equal(model.decode_head.conv_seg.weight, before["decode_head.conv_seg.weight"])


def test_no_progress_hides_runner_logs_and_metric_tables(fmnist_root, cache, capfd):
    from mmengine.logging import MMLogger

    def adapter(progress: bool) -> SegmentationAdapter:
        made = SegmentationAdapter(tiny_deeplabv3_config(), "tiny", str(fmnist_root), cache, torch.device("cpu"))
        made.progress = progress
        return made

    model = adapter(True).build_model()
    MMLogger.get_instance("seg-progress-on", log_level="INFO")  # mmengine logs to its latest logger
    adapter(True).evaluate(model)
    assert "per class results" in capfd.readouterr().out  # progress on: the table is printed
    quiet = adapter(False)  # --no-progress
    quiet.train_teacher(model)
    MMLogger.get_instance("seg-progress-off", log_level="INFO")  # quiet whatever logger is the latest
    quiet.evaluate(model)
    printed = capfd.readouterr()
    for chatter in ("System environment", "Iter(train)", "per class results"):
        assert chatter not in printed.out + printed.err, chatter


# -- evaluation ---------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """Predicts the ground truth (or its shift): IoUMetric must score it 100 (or low)."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.shift = shift
        self.calls = 0

    def test_step(self, data):
        from mmengine.structures import PixelData

        self.calls += len(data["data_samples"])
        for sample in data["data_samples"]:
            gt = sample.gt_sem_seg.data
            sample.pred_sem_seg = PixelData(data=(gt + self.shift) % len(SCENE_CLASSES))
        return data["data_samples"]


def test_evaluate_scores_through_iou_metric(adapter):
    perfect = adapter.evaluate(Oracle())
    assert perfect["mIoU"] == 100.0 and perfect["aAcc"] == 100.0  # mmseg reports percent
    assert adapter.evaluate(Oracle(shift=1))["mIoU"] == 0.0
    metrics = adapter.evaluate(adapter.build_model())
    assert {"mIoU", "aAcc", "mAcc"} <= set(metrics) and 0.0 <= metrics["mIoU"] <= 100.0


def test_evaluate_honours_max_samples(fmnist_root, cache):
    cfg = tiny_deeplabv3_config(eval=dict(max_samples=2))
    oracle = Oracle()
    SegmentationAdapter(cfg, "tiny", str(fmnist_root), cache, torch.device("cpu")).evaluate(oracle)
    assert oracle.calls == 2


# -- ZAQ on the segmentor ----------------------------------------------------------------------
def test_two_zaq_iterations_change_q_and_leave_p(adapter, tmp_path):
    teacher = adapter.build_model().eval()
    p_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    q, info = quantize_model(teacher, QConfig.from_dict(dict(adapter.cfg.quant)))
    assert info["full_precision"] == ["backbone.stem.0", "decode_head.conv_seg"]
    q_before = {k: v.clone() for k, v in q.state_dict().items()}
    cfg = ZAQConfig(iters=2, q_steps=2, batch_size=2, nz=16, generator_channels=16, calib_batches=1,
                    checkpoint_interval=1, q_lr=0.01)
    trainer = ZAQTrainer(adapter, teacher, q, cfg, tmp_path, seed=0, progress=False)
    trainer.run()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in p_before.items())
    assert any(not torch.equal(v, trainer.qmodel.state_dict()[k]) for k, v in q_before.items())


# -- the stock mmseg config ----------------------------------------------------------------------
@pytest.mark.slow
def test_stock_deeplabv3_r50_config_builds_quantizes_and_runs_an_engine_iteration(tmp_path):
    cfg = Config.fromfile(str(ROOT / "configs" / "seg" / "deeplabv3_r50_cityscapes.py"))
    cfg.task.input_size = (64, 64)  # small generator output; the config's own is the 512x1024 crop
    adapter = SegmentationAdapter(cfg, "deeplabv3_r50_cityscapes", None, tmp_path, torch.device("cpu"))
    model = adapter.build_model().eval()
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    q, info = quantize_model(model, QConfig.from_dict(dict(cfg.quant)))
    assert info["full_precision"] == ["backbone.stem.0", "decode_head.conv_seg"]
    assert "auxiliary_head.conv_seg" in info["quantized"]
    # the config's own (stable) recipe at a tiny size, as a W8 job runs it (the bit-width rule's
    # weight pull and anchor images on)
    zaq = build_method("zaq", **{**dict(cfg.methods.zaq), "iters": 1, "q_steps": 1, "batch_size": 2, "nz": 8,
                                 "generator_channels": 8, "calib_batches": 1,
                                 "checkpoint_interval": 1}).for_bits(8, 8).zaq_config()
    assert zaq.q_anchor_fraction == 0.5 and zaq.q_prox_weight > 0
    trainer = ZAQTrainer(adapter, model, q, zaq, tmp_path / "zaq", seed=0, progress=False)
    trainer.calibrate(1)  # what run() does first
    losses = trainer.step()
    assert all(np.isfinite(v) for v in losses.values()), losses
    with torch.no_grad():
        assert adapter.forward_raw(q.eval(), torch.randn(1, 3, 64, 64)).shape == (1, 19, 8, 8)


# -- data -------------------------------------------------------------------------------------------
def test_written_masks_match_the_items_boxes_of_the_same_scene(fmnist_root, tmp_path):
    scenes = list(generate_scenes(6, "val", seed=3, spec=SceneSpec(**SPEC), data_root=str(fmnist_root)))
    write_mmseg(scenes, tmp_path, "val")
    for i, scene in enumerate(scenes):
        label = Image.open(tmp_path / "ann_dir" / "val" / f"{i:06d}.png")
        assert label.mode == "L"
        label = np.asarray(label)
        boxes_of = {}  # class id -> pixels inside a box of an item of that class
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            inside = label[y0:y1, x0:x1] == inst.label + 1
            # tight: every border row and column of the box has a pixel of the item's class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            boxes_of.setdefault(inst.label + 1, np.zeros_like(label, bool))[y0:y1, x0:x1] = True
        assert set(np.unique(label)) <= {0, *boxes_of}
        for cls, in_box in boxes_of.items():  # each class's pixels lie in that class's boxes
            assert not ((label == cls) & ~in_box).any()


# -- bad input ----------------------------------------------------------------------------------------
def _damage(root: Path, how: str) -> None:
    path = root / "ann_dir" / "val" / "000001.png"
    label = np.asarray(Image.open(path))
    if how == "rgb":
        Image.fromarray(np.repeat(label[..., None], 3, axis=2)).save(path)
    elif how == "out-of-range":
        label = label.copy()
        label[0, 0] = 42
        Image.fromarray(label).save(path)
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how, match", [("rgb", "mode 'RGB'"), ("out-of-range", r"label\(s\) \[42\]"),
                                        ("missing", "is missing")])
def test_bad_annotation_pngs_raise_user_error(scenes_copy, tmp_path, how, match):
    _damage(scenes_copy, how)
    with pytest.raises(UserError, match=match):
        make_adapter(tmp_path, scenes_copy).evaluate(Oracle())


def test_ignore_label_255_is_accepted(scenes_copy, tmp_path):
    path = scenes_copy / "ann_dir" / "val" / "000000.png"
    label = np.asarray(Image.open(path)).copy()
    label[:4] = 255
    Image.fromarray(label).save(path)
    assert make_adapter(tmp_path, scenes_copy).evaluate(Oracle())["mIoU"] == 100.0


@pytest.mark.parametrize("change, match", [
    (lambda c: c.model.update(type="NoSuchSegmentor"), "cannot build the segmentor"),
    (lambda c: c.task.update(features=["backbone.nope"]), "not found in the model"),
])
def test_bad_model_config_raises_user_error(tmp_path, change, match):
    cfg = tiny_deeplabv3_config()
    change(cfg)
    with pytest.raises(UserError, match=match):
        make_adapter(tmp_path, None, cfg).build_model()


def test_size_the_generator_cannot_produce_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="multiple of 4"):
        make_adapter(tmp_path, None, tiny_deeplabv3_config(input_size=(66, 64)))


def test_mismatched_checkpoint_raises_user_error(adapter, tmp_path):
    model = adapter.build_model()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("decode_head.conv_seg")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="missing"):
        load_weights(adapter, model, tmp_path / "partial.pth", trust=False)


def test_importing_the_adapter_does_not_import_mmseg():
    code = "import sys, tasks.segmentation; assert 'mmseg' not in sys.modules and 'mmcv' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# -- the settings seg shares with det (tasks/mm_base.py) -----------------------------------------------
def plan_of(tmp_path: Path, monkeypatch, *args: str):
    """The runner's plan (every check, no work) of a seg run on the embedded data."""
    import tasks  # noqa: F401 - registers the adapters
    from zaqbench.run.runner import build_parser, build_plan

    monkeypatch.delenv("ZAQBENCH_DATA", raising=False)
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return build_plan(build_parser().parse_args(["--task", "seg", "--out", str(tmp_path / "out.csv"),
                                                 "--device", "cpu", *args]))


def test_shipped_config_keeps_the_config_hash_of_its_committed_rows(tmp_path, monkeypatch):
    import csv

    with open(ROOT / "results" / "seg.csv", newline="") as f:
        committed = {row["config_hash"] for row in csv.DictReader(f)
                     if row["model"] == "deeplabv3" and row["method"] == "fp"}
    plan = plan_of(tmp_path, monkeypatch, "--model", "deeplabv3", "--method", "fp")
    assert committed == {plan.jobs[0].config_hash}


def test_worker_counts_are_hashed_as_the_committed_configs_spell_them():
    cfg = Config.fromfile(str(ROOT / "configs" / "seg" / "deeplabv3_r50_cityscapes.py"))
    adapter = SegmentationAdapter(cfg, "deeplabv3_r50_cityscapes", None, ROOT, torch.device("cpu"))
    task = adapter.task_for_hash(dict(cfg.task))
    assert task["eval"] == {"max_samples": None, "num_workers": 2} and task["teacher"] == {"seed": 0, "num_workers": 2}
    assert task["data"] == cfg.task.data  # seg's switch is spelled as its rows were hashed


def test_stock_config_on_the_embedded_scenes_names_the_scenes_base(tmp_path, monkeypatch):
    """A stock mmseg config without --data-root stops in the plan, before any scene is built,
    naming the base config that reads the scenes."""
    config = tmp_path / "stock.py"
    config.write_text("_base_ = 'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'\n"
                      "model = dict(pretrained=None)\n")
    with pytest.raises(UserError) as err:
        plan_of(tmp_path, monkeypatch, "--config", str(config), "--method", "fp")
    message = str(err.value)
    assert "configs/seg/_scenes.py" in message and "configs/seg/deeplabv3.py" in message
    assert "CityscapesDataset" in message and "task.data.scenes=False" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()


def test_own_dataset_without_a_folder_says_to_pass_data_root(tmp_path):
    cfg = tiny_deeplabv3_config(data=dict(scenes=False))
    with pytest.raises(UserError, match="data_root 'unused', which is not a folder here; pass --data-root"):
        SegmentationAdapter(cfg, "tiny", None, tmp_path, torch.device("cpu")).check()


@pytest.mark.parametrize("section", ["eval", "teacher"])
def test_old_worker_key_names_the_new_one(tmp_path, section):
    with pytest.raises(UserError, match=rf"task\.{section}\.num_workers is not a field; use task\.{section}\.workers"):
        make_adapter(tmp_path, None, tiny_deeplabv3_config(**{section: dict(num_workers=2)}))


def test_teacher_loader_workers_are_used_as_written_on_any_machine(adapter, monkeypatch):
    """The teacher's augmentations draw from each worker's own stream: its worker count is the
    config's on any machine, whatever the cores (evaluation's follows the cores)."""
    from mmengine.runner import Runner

    from zaqbench import devices

    seen = []
    monkeypatch.setattr(Runner, "train", lambda self: seen.append(self._train_dataloader["num_workers"]))
    adapter.teacher_cfg["workers"] = 3
    for cores in (2, 8):
        monkeypatch.setattr(devices, "usable_cores", lambda: cores)
        adapter.train_teacher(adapter.build_model())
    assert seen == [3, 3]
