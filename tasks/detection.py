"""Detection through mmdet: any mmdet 3.x detector, COCO-format data, mmdet's own CocoMetric.

The config (``configs/det/<model>.py``) is an ordinary mmdet config plus a ``task``
section (:mod:`tasks.mm_base` holds what det shares with seg). The data is a
COCO-style folder: by default the Fashion-MNIST scenes of :mod:`tasks.scenes`, or
with ``task.data.scenes=False`` the config's dataset (real COCO, VOC converted to
COCO...) under ``--data-root``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from zaqbench.errors import UserError
from zaqbench.registry import TASKS

from .mm_base import OpenMMLabAdapter
from .mm_config import first_line, plain
from .scenes import scenes_key

COCO_SUFFIXES = ("", "_50", "_75", "_s", "_m", "_l")  # CocoMetric's bbox_mAP* items


@TASKS.register_module(name="det")
class DetectionAdapter(OpenMMLabAdapter):
    """An mmdet detector on a COCO-format dataset; features default to the neck."""

    title = "Detection"
    metric = "bbox_mAP"
    task_name = "det"
    scope = "mmdet"
    model_kind = "detector"
    scenes_format = "coco"
    scenes_base = "configs/det/_base_/scenes_coco.py"
    scenes_example = "configs/det/retinanet.py"
    metric_type = "CocoMetric"
    init_weights_on_build = True
    # results/det.csv's config hashes spell the embedded-data switch data.source ('scenes' / 'coco')
    hash_spelling = {("data", "scenes"): ("source", {True: "scenes", False: "coco"})}

    @property
    def feature_names(self) -> list[str]:
        return list(self.task_cfg.get("features") or ["neck"])

    def teacher_key(self) -> dict[str, Any]:
        """The architecture, the training data and schedule; not what only affects
        inference (``test_cfg``) or logging."""
        model = plain(self.cfg.model)
        model.pop("test_cfg", None)
        fields = ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler")
        return {"task": "det", "model": model, "data": self._data_identity(), "teacher": self.teacher_recipe(),
                **{f: plain(self.cfg.get(f)) for f in fields}}

    def _data_identity(self) -> dict[str, Any]:
        if not self.builds_scenes:
            return {"root": str((self.root or self._config_data_root()).resolve())}
        spec, num_train, num_val, seed = self._scene_settings()
        return {"scenes": scenes_key("coco", num_train, num_val, seed, spec)}

    # -- the score ------------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """COCO bbox mAP (``bbox_mAP``, ``bbox_mAP_50``...) with mmdet's ``CocoMetric``."""
        metrics = super().evaluate(model)
        if self.metric not in metrics:  # mmdet reports nothing when no image has a single box: AP 0
            metrics = {f"bbox_mAP{suffix}": 0.0 for suffix in COCO_SUFFIXES}
        return metrics

    def _evaluator_cfg(self) -> dict[str, Any]:
        cfg = super()._evaluator_cfg()
        if "bbox" not in str(cfg.get("metric", "bbox")):
            raise UserError(f"det needs test_evaluator type='CocoMetric' with metric='bbox', got {cfg}")
        return cfg

    def metric_cfg(self, dataset: Any) -> dict[str, Any]:
        """Pointed at the test dataset's own annotations."""
        return dict(super().metric_cfg(dataset), ann_file=dataset.ann_file, format_only=False)

    def _evaluator(self, dataset: Any) -> Any:
        evaluator = super()._evaluator(dataset)
        if self.eval_cfg.get("max_samples"):  # a subset: the other images must not count as misses
            evaluator.metrics[0].img_ids = [dataset.get_data_info(i)["img_id"] for i in range(len(dataset))]
        return evaluator

    def deployed_model(self, model: torch.nn.Module, raw: Any) -> torch.nn.Module:
        from .onnx_eval import DeployedDetector

        return DeployedDetector(model, raw)

    # -- data ------------------------------------------------------------------------------
    def default_dataset_name(self) -> str:
        if self.builds_scenes:
            return "fmnist-scenes"
        return f"coco:{(self.root or self._config_data_root()).resolve().name}"

    def holds_scenes(self, root: Path) -> bool:
        return (root / "annotations").is_dir()

    def scenes_layout(self, split: str) -> dict[str, Any]:
        return {"ann_file": f"annotations/instances_{split}.json", "data_prefix": {"img": f"images/{split}/"}}

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """Random training images, resized to the input size and normalised by the
        model's own data preprocessor (without its padding)."""
        from mmengine.dataset import pseudo_collate

        height, width = self.input_size
        pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(width, height), keep_ratio=False),
                    dict(type="PackDetInputs")]
        dataset = self._dataset("train", pipeline=pipeline)
        with self.mm_scope():
            pre_cfg = dict(plain(self.cfg.model.get("data_preprocessor", {})), pad_size_divisor=1)
            pre_cfg.setdefault("type", "DetDataPreprocessor")
            preprocessor = self.registry("MODELS").build(pre_cfg)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        if batch_size * num_batches > len(order):
            order = order * (batch_size * num_batches // len(order) + 1)
        for b in range(num_batches):
            items = [dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]
            yield preprocessor(pseudo_collate(items), training=False)["inputs"].to(self.device)

    def check_files(self, leaf: dict[str, Any]) -> None:
        ann = Path(leaf["data_root"]) / leaf.get("ann_file", "")
        if not ann.is_file():
            raise UserError(f"COCO annotation file '{ann}' not found; the data root must contain "
                            f"'{leaf.get('ann_file')}' and images under '{leaf.get('data_prefix')}'")

    def dataset_error(self, split: str, leaf: dict[str, Any], err: BaseException) -> str:
        ann = Path(leaf["data_root"]) / leaf.get("ann_file", "")
        return (f"malformed COCO annotation file '{ann}': {type(err).__name__}: {first_line(err)}; "
                "expected COCO JSON with 'images', 'annotations' and 'categories'")

    def check_dataset(self, dataset: Any) -> None:
        if len(dataset) == 0:
            classes = dataset.metainfo.get("classes", ())
            raise UserError(f"no usable images in '{dataset.ann_file}': none has annotations of the config's "
                            f"classes ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
