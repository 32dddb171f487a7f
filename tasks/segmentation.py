"""Semantic segmentation through mmseg 1.x: the ``seg`` task adapter.

Any mmseg segmentor config works (``_base_ = ['mmseg::...']``): the model is
built from mmseg's ``MODELS`` registry with no pretrained download, trained with
mmengine's ``Runner`` (mmseg's own loop) and scored with mmseg's ``IoUMetric`` on
an mmseg test dataloader. The embedded default data are the Fashion-MNIST scenes
of :mod:`tasks.scenes` in mmseg's ``img_dir/`` + ``ann_dir/`` layout, read by
the registered ``FashionScenesDataset``; real data (Cityscapes, VOC, ...) work by
changing the dataset type in the config and passing ``--data-root``.

mmseg is imported only inside functions, so the core and the other tasks work
without it installed.
"""
from __future__ import annotations

import functools
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from zaqbench.adapter import InputSpec, TaskAdapter
from zaqbench.devices import loader_options
from zaqbench.errors import UserError
from zaqbench.features import resolve_modules
from zaqbench.registry import TASKS

from .fashion_mnist import CLASSES as FASHION_CLASSES
from .mm_config import plain, without_pretrained
from .mm_output import quiet_unless, runner_log_level
from .scenes import SceneSpec, ensure_scenes

SCENES_DATASET = "FashionScenesDataset"
#: background + the 10 Fashion-MNIST classes, in label order (0 = background)
SCENE_CLASSES = ("background",) + tuple(FASHION_CLASSES)
SCENE_PALETTE = [[0, 0, 0], [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156],
                 [190, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35],
                 [70, 130, 180], [220, 20, 60]]
#: label-PNG modes mmseg's ``LoadAnnotations`` reads as one class index per pixel
LABEL_MODES = ("L", "P")


# -- mmseg registration and scope --------------------------------------------------
@functools.lru_cache(maxsize=None)
def register_mmseg() -> type:
    """Import mmseg's modules into its registries and register ``FashionScenesDataset``.

    Runs once per process (cached); returns the dataset class. Done lazily so
    that importing this module never needs mmseg.
    """
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


@contextmanager
def mmseg_scope() -> Iterator[None]:
    """Build mmseg objects by their config names without changing the process-wide
    default scope (the detection adapter may share the process)."""
    from mmengine.registry import DefaultScope

    register_mmseg()
    with DefaultScope.overwrite_default_scope("mmseg"):
        yield


# -- config helpers ------------------------------------------------------------------
def check_input_size(size: Any) -> tuple[int, int]:
    """(H, W) the generator can produce: positive multiples of 4."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"task.input_size must be (height, width), got {size!r}") from None
    if h < 8 or w < 8 or h % 4 or w % 4:
        raise UserError(f"task.input_size {h}x{w} cannot be generated: height and width must be "
                        "multiples of 4 and at least 8")
    return h, w


# -- annotation checks -------------------------------------------------------------------
def check_annotations(dataset: Any, num_classes: int) -> None:
    """Raise a one-line ``UserError`` for the first missing or malformed label PNG.

    mmseg would otherwise fail deep inside a worker (missing file), silently
    train on garbage (an RGB mask read as three channels), or silently drop
    pixels from IoU (``torch.histc`` ignores labels outside the class range).
    Labels must be class indices, or ``ignore_index`` (255).
    """
    from PIL import Image

    if len(dataset) == 0:
        raise UserError(f"no images found for {type(dataset).__name__} under '{dataset.data_root}' "
                        f"(data_prefix {dict(dataset.data_prefix)}); check --data-root")
    top = num_classes if dataset.reduce_zero_label else num_classes - 1
    check_range = not dataset.label_map  # remapped subsets: raw ids belong to the full class list
    for i in range(len(dataset)):
        path = Path(dataset.get_data_info(i)["seg_map_path"])
        if not path.is_file():
            raise UserError(f"annotation '{path}' is missing: every image needs a label PNG of the "
                            "same name in the annotation folder")
        try:
            with Image.open(path) as im:
                mode = im.mode
                labels = np.asarray(im) if mode in LABEL_MODES and check_range else None
        except OSError as err:
            raise UserError(f"annotation '{path}' cannot be read as an image: {err}") from None
        if mode not in LABEL_MODES:
            raise UserError(f"annotation '{path}' has PNG mode '{mode}'; label maps must be single-channel "
                            "8-bit class indices (mode 'L' or 'P')")
        if labels is not None and int(labels.max()) > top:
            values = np.unique(labels)
            bad = values[(values > top) & (values != dataset.ignore_index)]
            if bad.size:
                raise UserError(f"annotation '{path}' has label(s) {bad.tolist()[:5]} outside the "
                                f"{num_classes} classes (valid: 0..{top}, or {dataset.ignore_index} = ignore)")


# -- the adapter ------------------------------------------------------------------------------
@TASKS.register_module(name="seg")
class SegmentationAdapter(TaskAdapter):
    """mmseg segmentors on the Fashion-MNIST scenes or any mmseg dataset.

    ``cfg.task`` fields: ``input_size`` (H, W) of generated images; ``features``
    (module names, default the backbone stages); ``eval`` (``max_samples``,
    ``num_workers``); ``teacher`` (``seed``, ``log_interval``, ``num_workers``);
    ``data`` (``scenes`` True for the embedded scenes with ``num_train``,
    ``num_val``, ``seed``, ``spec`` = :class:`tasks.scenes.SceneSpec` fields;
    an optional ``name`` for result rows).
    Metrics are mmseg's: percent (0-100).
    """

    title = "Segmentation"
    metric = "mIoU"
    task_fields = frozenset({"data", "eval", "features", "input_size", "teacher"})
    writes_cache = True  # the default scenes and the teacher's mmengine logs live in the cache

    def __init__(self, cfg: Any, model_name: str, data_root: str | None, cache_dir: Path,
                 device: torch.device) -> None:
        super().__init__(cfg, model_name, data_root, cache_dir, device)
        self.input_size = check_input_size(self.task_cfg.get("input_size", (128, 128)))
        self.data_cfg: dict[str, Any] = dict(self.task_cfg.get("data") or {})
        self._datasets: dict[str, Any] = {}
        self._test_loader = None

    # 1. the model ----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Random init, no download; SyncBN reverted to BN so one process runs it."""
        from mmengine.config import ConfigDict
        from mmengine.model import revert_sync_batchnorm

        with mmseg_scope():
            from mmseg.registry import MODELS

            # ConfigDict: mmseg reads e.g. ``test_cfg.mode`` as attributes
            model_cfg = ConfigDict(without_pretrained(plain(self.cfg.model)))
            try:
                model = MODELS.build(model_cfg)
            except (KeyError, TypeError) as err:
                raise UserError(f"cannot build the segmentor of config '{self.model_name}': "
                                f"{_first_line(err)}") from None
        # No init_weights() here: PyTorch's default init is enough for a model that is
        # loaded or trained next, and the Runner calls init_weights() before training.
        model = revert_sync_batchnorm(model)
        resolve_modules(model, self.feature_names)  # bad feature names fail now, not mid-run
        return model.to(self.device)

    def train_teacher(self, model: nn.Module) -> None:
        """Train in place with mmseg's loop (``cfg.train_cfg``, ``optim_wrapper``,
        ``param_scheduler``); BN layers train, so ZeroQ sees real statistics. No
        validation during training and no checkpoints: the core caches the result."""
        from mmengine.runner import Runner

        teacher = dict(self.task_cfg.get("teacher") or {})
        seed = int(teacher.get("seed", 0))
        loader = dict(plain(self.cfg.train_dataloader))
        workers = int(teacher.get("num_workers", 0))
        loader.update(dataset=self._dataset("train"), num_workers=workers, persistent_workers=workers > 0)
        train_cfg = plain(self.cfg.train_cfg)
        train_cfg.pop("val_interval", None)
        hooks = plain(self.cfg.get("default_hooks", {}))
        hooks.pop("visualization", None)  # no val loop to visualise
        hooks["checkpoint"] = None  # the core caches the weights
        if "log_interval" in teacher:
            hooks["logger"] = dict(type="LoggerHook", interval=int(teacher["log_interval"]),
                                   log_metric_by_epoch=False)
        with mmseg_scope():
            runner = Runner(
                model=model, work_dir=str(self.cache_dir / "work_dirs" / f"seg-{self.model_name}"),
                train_dataloader=loader, train_cfg=train_cfg,
                optim_wrapper=plain(self.cfg.optim_wrapper),
                param_scheduler=plain(self.cfg.get("param_scheduler")),
                default_hooks=hooks, env_cfg=plain(self.cfg.get("env_cfg", {})),
                log_processor=plain(self.cfg.get("log_processor", dict(by_epoch=False))),
                log_level=runner_log_level(self.progress, self.cfg.get("log_level", "INFO")), default_scope="mmseg",
                randomness=dict(seed=seed), cfg=self.cfg,
                # unique: mmengine reuses a logger of the same name (timestamp to the second), with
                # the level and handlers of whichever run made it first
                experiment_name=f"seg-{self.model_name}-teacher-{uuid.uuid4().hex[:12]}")
            runner.train()
        model.to(self.device).eval()

    def teacher_key(self) -> dict[str, Any]:
        """The teacher depends on the model, its training recipe and its data
        (not on how often it logs or how many loader workers it uses)."""
        keys = ("model", "train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler")
        teacher = {k: v for k, v in dict(self.task_cfg.get("teacher") or {}).items()
                   if k not in ("log_interval", "num_workers", "threads")}
        return {"task": "seg", **{k: plain(self.cfg.get(k)) for k in keys}, "teacher": plain(teacher),
                "data": plain(self.data_cfg), "data_root": self.data_root, "dataset": self.dataset_name}

    # 2. the input -------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        """Normalisation of mmseg's ``SegDataPreProcessor``, expressed for pixels in [0, 1]
        (mmseg's mean/std are on the 0-255 scale); channels in the model's order
        (RGB when ``bgr_to_rgb``)."""
        pre = self.cfg.model.get("data_preprocessor") or {}
        mean = tuple(float(m) / 255 for m in pre.get("mean") or (0.0, 0.0, 0.0))
        std = tuple(float(s) / 255 for s in pre.get("std") or (255.0, 255.0, 255.0))
        return InputSpec(3, *self.input_size, mean=mean, std=std)

    # 3. feature maps ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """``task.features``, else the backbone's ResNet-style stages ``backbone.layer{i}``."""
        names = self.task_cfg.get("features")
        if names:
            return list(names)
        stages = int(self.cfg.model.get("backbone", {}).get("num_stages", 4))
        return [f"backbone.layer{i + 1}" for i in range(stages)]

    # 4. raw outputs -------------------------------------------------------------------------
    def forward_raw(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits at the decode head's resolution (no resize, no argmax)."""
        return model(x, mode="tensor")

    # 5. the score -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """mmseg's ``IoUMetric`` over the test dataloader: ``mIoU``, ``aAcc``, ``mAcc`` in percent.

        Runs ``model.test_step``, i.e. the model's own data preprocessor (the same
        mean/std as ``input_spec``), sliding/whole inference and argmax.
        """
        from mmengine.evaluator import Evaluator

        loader = self._test_dataloader()
        with mmseg_scope():
            evaluator = Evaluator(plain(self.cfg.test_evaluator))
        evaluator.dataset_meta = loader.dataset.metainfo
        was_training = model.training
        model.eval()
        try:
            for data in loader:
                evaluator.process(data_samples=model.test_step(data), data_batch=data)
        finally:
            model.train(was_training)
        with quiet_unless(self.progress):  # mmseg logs a per-class table
            metrics = evaluator.evaluate(len(loader.dataset))
        return {k.split("/")[-1]: float(v) for k, v in metrics.items()}

    # 6. real data -------------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        if "name" in self.data_cfg:
            return str(self.data_cfg["name"])
        if self.data_cfg.get("scenes"):
            return "fashion-scenes"
        return str(self.cfg.test_dataloader.dataset.type)

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """Train-split images through the train pipeline and the model's preprocessor;
        every batch is full, passes over the split repeat (reshuffled) as needed."""
        loader, preprocess = self._real_loader(batch_size, seed)
        return _preprocessed(loader, preprocess, num_batches, self.device, seed)

    # -- data plumbing ----------------------------------------------------------------------------
    def data_root_for_scenes(self) -> Path:
        """The scenes' root: ``--data-root`` itself if it already has the mmseg layout,
        else scenes built once into the cache (``--data-root`` then names Fashion-MNIST)."""
        if self.data_root and (Path(self.data_root) / "ann_dir").is_dir():
            return Path(self.data_root)
        data = self.data_cfg
        spec = SceneSpec(**dict(data.get("spec") or {}))
        if spec.size != self.input_size[0] or spec.size != self.input_size[1]:
            raise UserError(f"task.input_size {self.input_size} must equal the scene size "
                            f"({spec.size}, {spec.size}); set task.data.spec.size")
        return ensure_scenes(self.cache_dir, "mmseg", int(data.get("num_train", 4000)),
                             int(data.get("num_val", 1000)), int(data.get("seed", 0)), spec,
                             data_root=self.data_root)

    def _dataset_cfg(self, split: str) -> dict[str, Any]:
        loader = self.cfg.train_dataloader if split == "train" else self.cfg.test_dataloader
        cfg = plain(loader.dataset)
        if self.data_cfg.get("scenes"):
            cfg["data_root"] = str(self.data_root_for_scenes())
        elif self.data_root:
            cfg["data_root"] = str(self.data_root)
        max_samples = (self.task_cfg.get("eval") or {}).get("max_samples")
        if split == "test" and max_samples:
            cfg["indices"] = int(max_samples)
        return cfg

    def _dataset(self, split: str) -> Any:
        """The split's mmseg dataset, built and checked once."""
        if split not in self._datasets:
            with mmseg_scope():
                from mmseg.registry import DATASETS

                cfg = self._dataset_cfg(split)
                try:
                    with quiet_unless(self.progress):
                        dataset = DATASETS.build(cfg)
                except (KeyError, FileNotFoundError) as err:
                    raise UserError(f"cannot build the {split} dataset '{cfg.get('type')}' under "
                                    f"'{cfg.get('data_root')}': {_first_line(err)}") from None
            check_annotations(dataset, len(dataset.metainfo["classes"]))
            self._datasets[split] = dataset
        return self._datasets[split]

    def _test_dataloader(self):
        if self._test_loader is None:
            from mmengine.runner import Runner

            # on a GPU, worker processes and pinned memory unless the config says otherwise
            opts = loader_options(self.device, (self.task_cfg.get("eval") or {}).get("num_workers"))
            cfg = dict(plain(self.cfg.test_dataloader), dataset=self._dataset("test"), **opts)
            with mmseg_scope():
                self._test_loader = Runner.build_dataloader(cfg)
        return self._test_loader

    def _real_loader(self, batch_size: int, seed: int):
        from mmengine.runner import Runner

        dataset = self._dataset("train")
        with mmseg_scope():
            from mmseg.registry import MODELS

            loader = Runner.build_dataloader(dict(
                batch_size=batch_size, num_workers=0, dataset=dataset,
                sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed)))  # reshuffles each pass
            preprocess = MODELS.build(plain(self.cfg.model.data_preprocessor))
        return loader, preprocess.to(self.device)


def _preprocessed(loader, preprocess: nn.Module, num_batches: int, device: torch.device,
                  seed: int) -> Iterator[torch.Tensor]:
    """The first ``num_batches`` normalised (N, 3, H, W) batches of an endless loader.

    mmcv's augmentations draw from numpy's global RNG: each batch is loaded
    under its own seed (and the caller's RNG state is put back), so the same
    seed gives the same batches.
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


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().strip("'\"").splitlines()
    return lines[0] if lines else type(err).__name__
