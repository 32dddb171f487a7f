"""Detection through mmdet: any mmdet 3.x detector, COCO-format data, mmdet's own CocoMetric.

The config (``configs/det/<model>.py``) is an ordinary mmdet config (``_base_``
may name ``mmdet::`` configs) plus a ``task`` section for this adapter. The
model is built from mmdet's registry with no pretrained download, trained with
mmengine's ``Runner``, and scored by mmdet's ``CocoMetric`` over an mmdet test
dataloader. The data is a COCO-style folder: ``--data-root`` (real COCO, VOC
converted to COCO...) or, by default, Fashion-MNIST scenes built once into the
cache by :mod:`tasks.scenes`.

mmdet is imported inside the methods only, so the core works without it.
"""
from __future__ import annotations

import copy
import json
import tempfile
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from zaqbench.adapter import InputSpec, Nested, TaskAdapter
from zaqbench.devices import loader_options
from zaqbench.errors import UserError
from zaqbench.features import resolve_modules
from zaqbench.registry import TASKS

from .mm_config import plain, without_pretrained
from .mm_output import quiet_unless, runner_log_level
from .scenes import SceneSpec, ensure_scenes, scenes_key

LOADERS = {"train": "train_dataloader", "test": "test_dataloader"}
COCO_SUFFIXES = ("", "_50", "_75", "_s", "_m", "_l")  # CocoMetric's bbox_mAP* items


# -- helpers ---------------------------------------------------------------------
@contextmanager
def mmdet_scope() -> Iterator[None]:
    """mmdet's registries as the default scope while building, restored afterwards."""
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope("mmdet"):
        yield


@contextmanager
def _quiet_mmengine() -> Iterator[None]:
    """Silence mmengine's INFO logging for the block (restored afterwards)."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _leaf_dataset(cfg: dict) -> dict:
    """The dataset config that reads files, under wrappers like RepeatDataset."""
    while "dataset" in cfg and "ann_file" not in cfg:
        cfg = cfg["dataset"]
    return cfg


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# -- the adapter -------------------------------------------------------------------
@TASKS.register_module(name="det")
class DetectionAdapter(TaskAdapter):
    """An mmdet detector on a COCO-format dataset.

    ``cfg.task`` fields: ``features`` (module names to align; default the neck),
    ``input_size`` ((H, W) of generated inputs), ``eval`` (``max_samples``),
    ``teacher`` (``seed``, ``log_interval``), ``data`` (``source``: 'scenes' or
    'coco'; for scenes ``num_train``, ``num_val``, ``seed`` and ``spec``, a
    :class:`tasks.scenes.SceneSpec` dict).
    """

    title = "Detection"
    metric = "bbox_mAP"
    task_fields = frozenset({"data", "eval", "features", "input_size", "teacher"})
    writes_cache = True  # the default scenes and the teacher's mmengine logs live in the cache

    def __init__(self, cfg: Any, model_name: str, data_root: str | None, cache_dir: Path,
                 device: torch.device) -> None:
        super().__init__(cfg, model_name, data_root, cache_dir, device)
        if "model" not in cfg:
            raise UserError(f"config for '{model_name}' has no 'model' section; a detection config "
                            "must be an mmdet config (e.g. _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')")
        self.data_cfg: dict[str, Any] = dict(self.task_cfg.get("data", {}))
        self.eval_cfg: dict[str, Any] = dict(self.task_cfg.get("eval", {}))
        self.teacher_cfg: dict[str, Any] = dict(self.task_cfg.get("teacher", {}))
        self._test_loader: Any = None  # built on the first evaluate, then reused (budget curves evaluate often)
        self._check_input_size()

    # 1. the model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from mmdet.registry import MODELS
        from mmengine.model import revert_sync_batchnorm

        try:
            with mmdet_scope():
                model = MODELS.build(without_pretrained(copy.deepcopy(self.cfg.model)))
        except KeyError as err:  # unknown type names in the config
            raise UserError(f"cannot build detector '{self.model_name}': {_first_line(err)}") from None
        model = revert_sync_batchnorm(model)  # SyncBN needs a process group; BN does the same on one device
        with _quiet_mmengine():  # init_weights logs one line per parameter
            model.init_weights()
        resolve_modules(model, self.feature_names)  # unknown feature names fail here, not mid-run
        return model.to(self.device)

    def train_teacher(self, model: nn.Module) -> None:
        """mmdet's own training loop (mmengine ``Runner``) on the train split, in place."""
        from mmengine.runner import Runner

        loader = dict(plain(self.cfg.train_dataloader), dataset=self._dataset("train"))
        hooks = dict(logger=dict(type="LoggerHook", interval=self.teacher_cfg.get("log_interval", 50)),
                     checkpoint=None)  # the core caches the weights; no per-epoch files
        with tempfile.TemporaryDirectory(prefix="zaqbench-det-") as work_dir, mmdet_scope():
            runner = Runner(
                model=model, work_dir=work_dir, train_dataloader=loader,
                train_cfg=plain(self.cfg.train_cfg), optim_wrapper=plain(self.cfg.optim_wrapper),
                param_scheduler=plain(self.cfg.get("param_scheduler")), default_hooks=hooks,
                log_processor=dict(by_epoch=True, window_size=self.teacher_cfg.get("log_interval", 50)),
                randomness=dict(seed=self.teacher_cfg.get("seed", 0)), default_scope="mmdet",
                log_level=runner_log_level(self.progress, self.cfg.get("log_level", "INFO")),
                env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo")),
                experiment_name=f"det-{self.model_name}-teacher-{Path(work_dir).name}",  # unique per run
            )
            runner.train()
        model.eval()

    def teacher_key(self) -> dict[str, Any]:
        """The architecture, the training data and schedule; not what only affects
        inference (``test_cfg``) or logging."""
        model = plain(self.cfg.model)
        model.pop("test_cfg", None)
        fields = ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler")
        return {"task": "det", "model": model, "data": self._data_identity(),
                "teacher": {k: v for k, v in self.teacher_cfg.items() if k not in ("log_interval", "threads")},
                **{f: plain(self.cfg.get(f)) for f in fields}}

    # 2. the input ----------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        """Normalisation of the model's own data preprocessor (pixel means/stds
        given in [0, 255] there, in [0, 1] units here), so a generated input fed
        straight to ``model(x, mode='tensor')`` matches what ``evaluate`` feeds."""
        pre = self.cfg.model.get("data_preprocessor", {})
        mean = tuple(float(m) / 255 for m in pre.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(float(s) / 255 for s in pre.get("std", (255.0, 255.0, 255.0)))
        height, width = self.task_cfg.get("input_size", (128, 128))
        return InputSpec(3, int(height), int(width), mean, std)

    # 3. features -----------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self.task_cfg.get("features") or ["neck"])

    # 4. raw outputs ---------------------------------------------------------------------
    def forward_raw(self, model: nn.Module, x: torch.Tensor) -> Nested:
        """Per-level classification scores and box regressions (and centerness for
        FCOS-like heads), before decoding and NMS."""
        return model(x, mode="tensor")

    # 5. the score -------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """COCO bbox mAP with mmdet's ``CocoMetric`` over the config's test dataloader."""
        loader = self._test_dataloader()
        dataset = loader.dataset
        with mmdet_scope(), quiet_unless(self.progress):  # pycocotools reads the annotations again
            evaluator = self._evaluator(dataset)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
        finally:
            model.train(was_training)
        with quiet_unless(self.progress):  # pycocotools prints each step, mmdet logs the table
            scores = evaluator.evaluate(len(dataset))
        metrics = {key.rpartition("/")[2]: float(value) for key, value in scores.items()}
        if self.metric not in metrics:  # mmdet reports nothing when no image has a single box: AP 0
            metrics = {f"bbox_mAP{suffix}": 0.0 for suffix in COCO_SUFFIXES}
        return metrics

    def _test_dataloader(self):
        """The test split's loader, built once per adapter: parsing the COCO annotations and
        building the dataset is the same work at every evaluation of a run or curve."""
        if self._test_loader is None:
            from mmengine.runner import Runner

            dataset = self._dataset("test", self.eval_cfg.get("max_samples"))
            with mmdet_scope(), quiet_unless(self.progress):
                loader_cfg = plain(self.cfg.test_dataloader)
                if self.device.type == "cuda":  # worker processes and pinned memory overlap loading with compute
                    loader_cfg.update(loader_options(self.device, loader_cfg.get("num_workers")))
                self._test_loader = Runner.build_dataloader(dict(loader_cfg, dataset=dataset))
        return self._test_loader

    def _evaluator(self, dataset):
        """The config's ``test_evaluator``, pointed at the test dataset's annotations
        and, for a ``max_samples`` subset, at those images only."""
        from mmdet.registry import METRICS
        from mmengine.evaluator import Evaluator

        metric_cfg = plain(self.cfg.get("test_evaluator") or dict(type="CocoMetric", metric="bbox"))
        if isinstance(metric_cfg, list):
            raise UserError("test_evaluator must be a single CocoMetric for the det task")
        if metric_cfg.get("type") != "CocoMetric" or "bbox" not in str(metric_cfg.get("metric", "bbox")):
            raise UserError(f"det needs test_evaluator type='CocoMetric' with metric='bbox', got {metric_cfg}")
        metric_cfg.update(ann_file=dataset.ann_file, format_only=False)
        metric = METRICS.build(metric_cfg)
        if self.eval_cfg.get("max_samples"):
            metric.img_ids = [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))]
        evaluator = Evaluator(metric)
        evaluator.dataset_meta = dataset.metainfo
        return evaluator

    # 6. data -------------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        if self.data_root:
            return f"coco:{Path(self.data_root).expanduser().resolve().name}"
        return "fmnist-scenes"

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """Random training images, resized to the input size and normalised by the
        model's own data preprocessor (without its padding)."""
        from mmdet.registry import MODELS
        from mmengine.dataset import pseudo_collate

        height, width = self.input_spec.height, self.input_spec.width
        pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(width, height), keep_ratio=False),
                    dict(type="PackDetInputs")]
        dataset = self._dataset("train", pipeline=pipeline)
        with mmdet_scope():
            pre_cfg = dict(plain(self.cfg.model.get("data_preprocessor", {})), pad_size_divisor=1)
            pre_cfg.setdefault("type", "DetDataPreprocessor")
            preprocessor = MODELS.build(pre_cfg)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        if batch_size * num_batches > len(order):
            order = order * (batch_size * num_batches // len(order) + 1)
        for b in range(num_batches):
            items = [dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]
            yield preprocessor(pseudo_collate(items), training=False)["inputs"].to(self.device)

    # -- internals -----------------------------------------------------------------------
    def _check_input_size(self) -> None:
        size = self.task_cfg.get("input_size", (128, 128))
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, int) and s >= 32 and s % 4 == 0 for s in size)):
            raise UserError(f"task.input_size must be (height, width), each a multiple of 4 (what the generator "
                            f"can produce) and at least 32 (the detector's coarsest stride), got {size}")

    def _data_identity(self) -> dict[str, Any]:
        if self.data_root:
            return {"root": str(Path(self.data_root).expanduser().resolve())}
        scenes = self._scenes_settings()
        return {"scenes": scenes_key("coco", scenes["num_train"], scenes["num_val"], scenes["seed"],
                                     scenes["spec"])}

    def _scenes_settings(self) -> dict[str, Any]:
        try:
            spec = SceneSpec(**dict(self.data_cfg.get("spec") or {}))
        except TypeError as err:
            raise UserError(f"task.data.spec: {err}; valid fields: {list(SceneSpec.__dataclass_fields__)}") from None
        if (spec.size, spec.size) != tuple(self.task_cfg.get("input_size", (128, 128))):
            raise UserError(f"task.input_size {tuple(self.task_cfg.get('input_size', (128, 128)))} must equal the "
                            f"scene size ({spec.size}, {spec.size}); set task.data.spec.size")
        return {"num_train": int(self.data_cfg.get("num_train", 4000)),
                "num_val": int(self.data_cfg.get("num_val", 1000)),
                "seed": int(self.data_cfg.get("seed", 0)), "spec": spec}

    @cached_property
    def root(self) -> Path:
        """The COCO-style data folder: ``--data-root``, or the cached scenes (built on first use)."""
        if self.data_root:
            root = Path(self.data_root).expanduser()
            if not root.is_dir():
                raise UserError(f"--data-root '{self.data_root}' is not a folder; point it at a COCO-style "
                                "dataset root (annotations/*.json and the image folders)")
            return root
        source = self.data_cfg.get("source", "scenes")
        if source != "scenes":
            raise UserError(f"model '{self.model_name}' evaluates on {source} data; pass --data-root pointing "
                            f"at a {source.upper()}-style folder (annotations/*.json and image folders)")
        s = self._scenes_settings()
        return ensure_scenes(self.cache_dir, "coco", s["num_train"], s["num_val"], s["seed"], s["spec"])

    def _dataset(self, split: str, max_samples: int | None = None, pipeline: list | None = None):
        """Build the ``split`` dataset of the config over ``self.root``; a missing or
        malformed annotation file becomes a one-line ``UserError``."""
        from mmdet.registry import DATASETS

        if LOADERS[split] not in self.cfg:
            raise UserError(f"config for '{self.model_name}' has no {LOADERS[split]}; a det config needs "
                            "train_dataloader and test_dataloader sections (as in any mmdet config)")
        cfg = plain(self.cfg[LOADERS[split]]["dataset"])
        leaf = _leaf_dataset(cfg)
        leaf["data_root"] = str(self.root)
        if max_samples:
            leaf["indices"] = int(max_samples)
        if pipeline is not None:
            leaf["pipeline"] = pipeline
        ann = self.root / leaf.get("ann_file", "")
        if not ann.is_file():
            raise UserError(f"COCO annotation file '{ann}' not found; --data-root must contain "
                            f"'{leaf.get('ann_file')}' and images under '{plain(leaf.get('data_prefix'))}'")
        try:
            with mmdet_scope(), quiet_unless(self.progress):  # pycocotools: "loading annotations..."
                dataset = DATASETS.build(cfg)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AssertionError) as err:
            raise UserError(f"malformed COCO annotation file '{ann}': {type(err).__name__}: {_first_line(err)}; "
                            "expected COCO JSON with 'images', 'annotations' and 'categories'") from None
        if len(dataset) == 0:
            classes = dataset.metainfo.get("classes", ())
            raise UserError(f"no usable images in '{ann}': none has annotations of the config's classes "
                            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
        return dataset
