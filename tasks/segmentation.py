"""Semantic segmentation through mmseg 1.x: any mmseg segmentor, mmseg's own IoUMetric.

The config (``configs/seg/<model>.py``) is an ordinary mmseg config plus a ``task``
section (:mod:`tasks.mm_base` holds what seg shares with det). The embedded data are
the Fashion-MNIST scenes of :mod:`tasks.scenes` in mmseg's ``img_dir/`` + ``ann_dir/``
layout, read by the registered ``FashionScenesDataset``; real data (Cityscapes, VOC...)
work with ``task.data.scenes=False`` and ``--data-root``. Metrics are mmseg's: percent.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from zaqbench.registry import TASKS

from .fashion_mnist import CLASSES as FASHION_CLASSES
from .mm_base import OpenMMLabAdapter
from .label_maps import check_annotations
from .mm_config import plain

SCENES_DATASET = "FashionScenesDataset"
#: background + the 10 Fashion-MNIST classes, in label order (0 = background)
SCENE_CLASSES = ("background",) + tuple(FASHION_CLASSES)
SCENE_PALETTE = [[0, 0, 0], [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
                 [190, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35],
                 [70, 130, 180], [220, 20, 60]]


@functools.lru_cache(maxsize=None)
def register_mmseg() -> type:
    """Import mmseg's modules into its registries and register ``FashionScenesDataset``
    (once per process); returns the dataset class."""
    from mmseg.datasets import BaseSegDataset
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)

    class FashionScenesDataset(BaseSegDataset):
        """Fashion-MNIST scenes: 11 classes, PNG images and 8-bit 'L' label PNGs of
        the same name; label 0 is a real class (background), so no zero reduction."""

        METAINFO = dict(classes=SCENE_CLASSES, palette=SCENE_PALETTE)

        def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png",
                     reduce_zero_label: bool = False, **kwargs: Any) -> None:
            super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                             reduce_zero_label=reduce_zero_label, **kwargs)

    DATASETS.register_module(name=SCENES_DATASET, module=FashionScenesDataset)
    return FashionScenesDataset


@TASKS.register_module(name="seg")
class SegmentationAdapter(OpenMMLabAdapter):
    """An mmseg segmentor; features default to the backbone's ResNet-style stages."""

    title = "Segmentation"
    metric = "mIoU"
    task_name = "seg"
    scope = "mmseg"
    model_kind = "segmentor"
    scenes_format = "mmseg"
    scenes_base = "configs/seg/_scenes.py"
    scenes_example = "configs/seg/deeplabv3.py"
    metric_type = "IoUMetric"
    # the config hashes of deeplabv3_r50_cityscapes.py spell its worker counts num_workers
    hash_spelling = {("eval", "workers"): ("num_workers", None), ("teacher", "workers"): ("num_workers", None)}

    def register(self) -> None:
        register_mmseg()

    @property
    def feature_names(self) -> list[str]:
        """``task.features``, else the backbone's stages ``backbone.layer{i}``."""
        names = self.task_cfg.get("features")
        if names:
            return list(names)
        stages = int(self.cfg.model.get("backbone", {}).get("num_stages", 4))
        return [f"backbone.layer{i + 1}" for i in range(stages)]

    def teacher_key(self) -> dict[str, Any]:
        """The model, its training recipe and its data."""
        keys = ("model", "train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler")
        return {"task": "seg", **{k: plain(self.cfg.get(k)) for k in keys}, "teacher": plain(self.teacher_recipe()),
                "data": plain(self.data_cfg), "data_root": self.data_root, "dataset": self.dataset_name}

    def deployed_model(self, model: torch.nn.Module, raw: Any) -> torch.nn.Module:
        from .onnx_eval import DeployedSegmentor

        return DeployedSegmentor(model, raw)

    # -- data ---------------------------------------------------------------------------------
    def default_dataset_name(self) -> str:
        return "fashion-scenes" if self.scenes else str(self.cfg.test_dataloader.dataset.type)

    def holds_scenes(self, root: Path) -> bool:
        return (root / "ann_dir").is_dir()

    def scenes_layout(self, split: str) -> dict[str, Any]:
        return {"type": SCENES_DATASET, "data_prefix": {"img_path": f"img_dir/{split}",
                                                        "seg_map_path": f"ann_dir/{split}"}}

    def check_dataset(self, dataset: Any) -> None:
        check_annotations(dataset, len(dataset.metainfo["classes"]))

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """Train-split images through the train pipeline and the model's preprocessor; every
        batch is full, passes over the split repeat (reshuffled) as needed."""
        from mmengine.runner import Runner

        dataset = self._dataset("train")
        with self.mm_scope():
            loader = Runner.build_dataloader(dict(
                batch_size=batch_size, num_workers=0, dataset=dataset,
                sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed)))  # reshuffles each pass
            preprocess = self.registry("MODELS").build(plain(self.cfg.model.data_preprocessor))
        return _preprocessed(loader, preprocess.to(self.device), num_batches, self.device, seed)


def _preprocessed(loader: Any, preprocess: nn.Module, num_batches: int, device: torch.device,
                  seed: int) -> Iterator[torch.Tensor]:
    """The first ``num_batches`` normalised (N, 3, H, W) batches of an endless loader.

    mmcv's augmentations draw from numpy's global RNG: each batch is loaded under its own
    seed (and the caller's RNG state is put back), so the same seed gives the same batches.
    """
    batches = iter(loader)
    for i in range(num_batches):
        with _numpy_seeded(seed * 100_003 + i):
            data = next(batches)
        with torch.no_grad():
            yield preprocess(data, training=True)["inputs"].to(device)


@contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)
