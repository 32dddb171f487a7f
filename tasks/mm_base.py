"""What the OpenMMLab task adapters (det through mmdet, seg through mmseg) share.

A det or seg config is an ordinary OpenMMLab config (``_base_`` may name ``mmdet::`` or
``mmseg::`` configs) plus a ``task`` section. :class:`OpenMMLabAdapter` builds the model
from the scope's registry with nothing downloaded, trains the teacher with mmengine's
``Runner``, scores with mmengine's ``Evaluator`` over the config's test dataloader (built
once per adapter) and reads either the embedded Fashion-MNIST scenes or the user's data.
A subclass says only what differs: its scope, the scenes' layout, its metric, its
feature maps, how real images are drawn, and what its teacher's cache key holds.

``task`` fields, the same for both tasks:

* ``input_size``: (H, W) of generated images, see :func:`tasks.mm_config.check_input_size`.
* ``features``: module names aligned by D_f (default: the subclass's).
* ``data``: ``scenes`` (default True: the Fashion-MNIST scenes of :mod:`tasks.scenes`, built
  once into the cache with ``num_train``, ``num_val``, ``seed`` and ``spec`` =
  :class:`tasks.scenes.SceneSpec` fields; False: the dataset the config's dataloaders name,
  under ``--data-root`` or the config's own ``data_root``); ``name``: the rows' dataset column.
* ``eval``: ``max_samples``, ``workers``; ``teacher``: ``seed``, ``log_interval``, ``threads``,
  ``workers``. ``workers``: loader processes, default the config's dataloader ``num_workers``;
  for evaluation a request within the cores this process has (:func:`zaqbench.devices.loader_workers`),
  for the teacher the count itself (its augmentations depend on it).

mmdet, mmseg and mmengine are imported inside the methods only, so the core works without them.
"""
from __future__ import annotations

import abc
import importlib
import tempfile
import uuid
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from zaqbench.adapter import InputSpec, TaskAdapter
from zaqbench.devices import loader_options
from zaqbench.errors import UserError
from zaqbench.zaq.features import resolve_modules

from .mm_config import check_input_size, first_line, leaf_dataset, plain, without_pretrained
from .mm_output import quiet_unless, runner_log_level
from .scenes import SceneSpec, ensure_scenes

LOADERS = {"train": "train_dataloader", "test": "test_dataloader"}
SCENE_SPLITS = {"train": "train", "test": "val"}  # loader -> the scenes' split
#: the fields of each ``task`` sub-section
FIELDS = {"data": ("scenes", "num_train", "num_val", "seed", "spec", "name"),
          "eval": ("max_samples", "workers"),
          "teacher": ("seed", "log_interval", "threads", "workers")}
#: fields spelled otherwise elsewhere -> the one to use
RENAMED = {"data.source": "task.data.scenes (True: the embedded scenes; False: the config's dataset at "
                          "--data-root)",
           "eval.num_workers": "task.eval.workers", "teacher.num_workers": "task.teacher.workers"}
#: exceptions mmengine datasets raise on missing or malformed files
DATASET_ERRORS = (KeyError, TypeError, ValueError, IndexError, AssertionError, FileNotFoundError)


class OpenMMLabAdapter(TaskAdapter):
    """The shared half of the det and seg adapters (see the module docstring for ``task``)."""

    task_fields = frozenset({"data", "eval", "features", "input_size", "teacher"})
    writes_cache = True  # the embedded scenes are built into the cache

    #: the task's registry key ('det', 'seg') and the registry scope of its config's type names
    task_name: str = ""
    scope: str = ""
    #: the model in messages: 'detector', 'segmentor'
    model_kind: str = ""
    #: the layout the scenes are written in (``tasks.scenes.FORMATS``), the base config that
    #: reads that layout, and a shipped config built on it
    scenes_format: str = ""
    scenes_base: str = ""
    scenes_example: str = ""
    #: the one ``test_evaluator`` type the task scores with
    metric_type: str = ""
    #: ``init_weights()`` when the model is built (else the Runner calls it before training)
    init_weights_on_build: bool = False
    #: how row config hashes spell task fields: (section, field) -> (spelling, value map or None)
    hash_spelling: dict[tuple[str, str], tuple[str, dict | None]] = {}

    def __init__(self, cfg: Any, model_name: str, data_root: str | None, cache_dir: Path,
                 device: torch.device) -> None:
        super().__init__(cfg, model_name, data_root, cache_dir, device)
        if "model" not in cfg:
            raise UserError(f"config for '{model_name}' has no 'model' section; a {self.task_name} config must "
                            f"be an {self.scope} config (e.g. built on {self.scenes_example})")
        self.data_cfg, self.eval_cfg, self.teacher_cfg = (self._section(name) for name in FIELDS)
        self.input_size = check_input_size(self.task_cfg.get("input_size", (128, 128)))
        self.scenes = self.data_cfg.get("scenes", True)
        if not isinstance(self.scenes, bool):
            raise UserError(f"task.data.scenes={self.scenes!r} must be True (the embedded scenes) or False "
                            "(the config's dataset at --data-root)")
        self._datasets: dict[str, Any] = {}  # split -> dataset, built once
        self._test_loader: Any = None  # built on the first evaluate, then reused (curves evaluate often)

    def _section(self, name: str) -> dict[str, Any]:
        """``task.<name>`` as a dict; a field spelled as in :data:`RENAMED`, or unknown, is a ``UserError``."""
        section = self.task_cfg.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"task.{name}={section!r} must be a dict with fields {', '.join(FIELDS[name])}")
        for key in section:
            if f"{name}.{key}" in RENAMED:
                raise UserError(f"task.{name}.{key} is not a field; use {RENAMED[f'{name}.{key}']}")
            if key not in FIELDS[name]:
                raise UserError(f"unknown field task.{name}.{key}; valid fields: {', '.join(FIELDS[name])}")
        workers = section.get("workers")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise UserError(f"task.{name}.workers={workers!r} is not valid; use a non-negative integer")
        return dict(section)

    def check(self) -> None:
        """Also, before any work: the data settings fit the config, and the config scores with
        the task's metric."""
        super().check()
        if self.scenes:
            self._check_scenes_layout()
        if self.data_root:
            self._data_root_folder()
        if self.builds_scenes:
            self._scene_settings()
        elif not self.data_root:
            self._config_data_root()
        self._evaluator_cfg()

    def task_for_hash(self, task: Any) -> Any:
        """``task`` with the fields of :attr:`hash_spelling` spelled as row config hashes spell them."""
        if not isinstance(task, dict):
            return task
        task = dict(task)
        for (name, field), (spelling, values) in self.hash_spelling.items():
            section = task.get(name)
            if isinstance(section, dict) and field in section:
                section = dict(section)
                value = section.pop(field)
                section[spelling] = values[value] if values else value
                task[name] = section
        return task

    # -- scope --------------------------------------------------------------------------
    def register(self) -> None:
        """Import the scope's modules into its registries (once per process)."""
        importlib.import_module(f"{self.scope}.utils").register_all_modules(init_default_scope=False)

    @contextmanager
    def mm_scope(self) -> Iterator[None]:
        """The scope's registries as mmengine's default scope within the block, restored after
        (the other OpenMMLab adapter may share the process)."""
        from mmengine.registry import DefaultScope

        self.register()
        with DefaultScope.overwrite_default_scope(self.scope):
            yield

    def registry(self, name: str) -> Any:
        """The scope's registry ``name`` ('MODELS', 'DATASETS', ...)."""
        return getattr(importlib.import_module(f"{self.scope}.registry"), name)

    # 1. the model ---------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Random init, no download; SyncBN reverted to BN so one process runs it."""
        from mmengine.config import ConfigDict
        from mmengine.model import revert_sync_batchnorm

        with self.mm_scope():
            try:  # ConfigDict: OpenMMLab models read e.g. ``test_cfg.mode`` as attributes
                model = self.registry("MODELS").build(ConfigDict(without_pretrained(plain(self.cfg.model))))
            except (KeyError, TypeError) as err:  # unknown type names or arguments in the config
                raise UserError(f"cannot build the {self.model_kind} of config '{self.model_name}': "
                                f"{first_line(err)}") from None
        model = revert_sync_batchnorm(model)
        if self.init_weights_on_build:
            with quiet_unless(False):  # init_weights logs one line per parameter
                model.init_weights()
        resolve_modules(model, self.feature_names)  # unknown feature names fail here, not mid-run
        return model.to(self.device)

    def train_teacher(self, model: nn.Module) -> None:
        """The config's training recipe (``train_cfg``, ``optim_wrapper``, ``param_scheduler``)
        with mmengine's ``Runner``, in place; no validation and no checkpoints (the core caches
        the weights), logs in a temporary folder."""
        from mmengine.runner import Runner

        # the worker count as written, on any machine: mmcv's random augmentations draw from each
        # worker's own seeded stream, so the teacher depends on it (as on task.teacher.threads)
        workers = self._workers("teacher", "train")
        loader = dict(plain(self.cfg.train_dataloader), dataset=self._dataset("train"), num_workers=workers,
                      persistent_workers=workers > 0)
        train_cfg = plain(self.cfg.train_cfg)
        train_cfg.pop("val_interval", None)
        hooks = plain(self.cfg.get("default_hooks") or {})
        hooks.pop("visualization", None)  # no val loop to visualise
        hooks["checkpoint"] = None
        if "log_interval" in self.teacher_cfg:
            hooks["logger"] = dict(hooks.get("logger") or dict(type="LoggerHook"),
                                   interval=int(self.teacher_cfg["log_interval"]))
        with tempfile.TemporaryDirectory(prefix=f"zaqbench-{self.scope}-") as work_dir, self.mm_scope():
            runner = Runner(
                model=model, work_dir=work_dir, train_dataloader=loader, train_cfg=train_cfg,
                optim_wrapper=plain(self.cfg.optim_wrapper), param_scheduler=plain(self.cfg.get("param_scheduler")),
                default_hooks=hooks, log_processor=plain(self.cfg.get("log_processor")),
                env_cfg=dict(plain(self.cfg.get("env_cfg") or {}), cudnn_benchmark=False),
                randomness=dict(seed=int(self.teacher_cfg.get("seed", 0))), default_scope=self.scope,
                log_level=runner_log_level(self.progress, self.cfg.get("log_level", "INFO")),
                # unique: mmengine reuses a logger of the same name (timestamp to the second), with
                # the level and handlers of whichever run made it first
                experiment_name=f"{self.scope}-{self.model_name}-teacher-{uuid.uuid4().hex[:12]}")
            runner.train()
        model.to(self.device).eval()

    def teacher_recipe(self) -> dict[str, Any]:
        """``task.teacher`` less logging and what is pinned as written on any machine but kept out
        of the cache key, like ``threads``, so caches and config hashes stay valid (``workers``)."""
        return {k: v for k, v in self.teacher_cfg.items() if k not in ("log_interval", "threads", "workers")}

    # 2. the input --------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        """Normalisation of the model's own data preprocessor (mean/std given in [0, 255] there,
        in [0, 1] units here), so a generated input fed straight to ``model(x, mode='tensor')``
        matches what ``evaluate`` feeds."""
        pre = self.cfg.model.get("data_preprocessor") or {}
        mean = tuple(float(m) / 255 for m in pre.get("mean") or (0.0, 0.0, 0.0))
        std = tuple(float(s) / 255 for s in pre.get("std") or (255.0, 255.0, 255.0))
        return InputSpec(3, *self.input_size, mean=mean, std=std)

    # 4. raw outputs ----------------------------------------------------------------------------
    def forward_raw(self, model: nn.Module, x: torch.Tensor) -> Any:
        """The head's raw outputs (``mode='tensor'``): before decoding, NMS, resizing or argmax."""
        return model(x, mode="tensor")

    # 5. the score ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The config's ``test_evaluator`` (mmengine ``Evaluator``) over the test dataloader,
        through ``model.test_step`` (the model's own preprocessor and post-processing)."""
        loader = self._test_dataloader()
        evaluator = self._evaluator(loader.dataset)
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
        finally:
            model.train(was_training)
        with quiet_unless(self.progress):  # metric tables, pycocotools' prints
            scores = evaluator.evaluate(len(loader.dataset))
        return {key.rpartition("/")[2]: float(value) for key, value in scores.items()}

    def _evaluator_cfg(self) -> dict[str, Any]:
        cfg = plain(self.cfg.get("test_evaluator") or dict(type=self.metric_type))
        if not isinstance(cfg, dict) or cfg.get("type") != self.metric_type:
            raise UserError(f"test_evaluator must be one dict(type='{self.metric_type}', ...) for the "
                            f"{self.task_name} task, got {cfg}")
        return cfg

    def _evaluator(self, dataset: Any) -> Any:
        """mmengine's ``Evaluator`` of the config's ``test_evaluator`` for ``dataset``."""
        from mmengine.evaluator import Evaluator

        with self.mm_scope(), quiet_unless(self.progress):
            evaluator = Evaluator(self.metric_cfg(dataset))
        evaluator.dataset_meta = dataset.metainfo
        return evaluator

    def metric_cfg(self, dataset: Any) -> dict[str, Any]:
        """The metric's config for ``dataset``; subclasses add what their metric needs."""
        return self._evaluator_cfg()

    def _test_dataloader(self) -> Any:
        """The test split's loader, built once per adapter: building the dataset is the same work
        at every evaluation of a run or a curve."""
        if self._test_loader is None:
            from mmengine.runner import Runner

            cfg = dict(plain(self.cfg.test_dataloader), dataset=self._dataset("test"),
                       **loader_options(self.device, self._workers("eval", "test")))
            with self.mm_scope(), quiet_unless(self.progress):
                self._test_loader = Runner.build_dataloader(cfg)
        return self._test_loader

    def _workers(self, section: str, split: str) -> int:
        """Requested loader processes: ``task.<section>.workers``, else the config's ``num_workers``."""
        workers = (self.eval_cfg if section == "eval" else self.teacher_cfg).get("workers")
        return int(self.cfg[LOADERS[split]].get("num_workers", 0) if workers is None else workers)

    # 6. data ------------------------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        return str(self.data_cfg["name"]) if "name" in self.data_cfg else self.default_dataset_name()

    @abc.abstractmethod
    def default_dataset_name(self) -> str:
        """The rows' dataset column without ``task.data.name``."""

    @abc.abstractmethod
    def holds_scenes(self, root: Path) -> bool:
        """``root`` is a copy of the scenes in :attr:`scenes_format` (else it names Fashion-MNIST)."""

    @abc.abstractmethod
    def scenes_layout(self, split: str) -> dict[str, Any]:
        """The dataset fields that read the scenes' ``split`` ('train' or 'val')."""

    @property
    def builds_scenes(self) -> bool:
        """The data are scenes built into the cache (from Fashion-MNIST at ``--data-root``, else
        at ``$ZAQBENCH_DATA`` or the Debian package), not read from a folder as they are."""
        return self.scenes and not (self.data_root and self.holds_scenes(Path(self.data_root).expanduser()))

    @cached_property
    def root(self) -> Path | None:
        """The folder the datasets are read from (None: the config's own ``data_root``): a
        ``--data-root`` that holds the data, or the scenes built once into the cache."""
        if self.data_root:
            root = self._data_root_folder()
            if not self.builds_scenes:
                return root
        elif not self.scenes:
            return None
        spec, num_train, num_val, seed = self._scene_settings()
        return ensure_scenes(self.cache_dir, self.scenes_format, num_train, num_val, seed, spec,
                             data_root=self.data_root)

    def _data_root_folder(self) -> Path:
        root = Path(str(self.data_root)).expanduser()
        if not root.is_dir():
            raise UserError(f"--data-root '{self.data_root}' is not a folder; point it at the dataset "
                            "(or, for the embedded scenes, at Fashion-MNIST)")
        return root

    def _scene_settings(self) -> tuple[SceneSpec, int, int, int]:
        """(spec, num_train, num_val, seed) of the scenes, checked (no data built)."""
        fields = self.data_cfg.get("spec") or {}
        if not isinstance(fields, dict):
            raise UserError(f"task.data.spec={fields!r} must be a dict of scene fields: "
                            f"{', '.join(SceneSpec.__dataclass_fields__)}")
        try:
            spec = SceneSpec(**fields)
        except TypeError as err:
            raise UserError(f"task.data.spec: {err}; valid fields: {', '.join(SceneSpec.__dataclass_fields__)}") \
                from None
        if (spec.size, spec.size) != self.input_size:
            raise UserError(f"task.input_size {self.input_size} must equal the scene size ({spec.size}, "
                            f"{spec.size}); set task.data.spec.size")
        spec.check()
        counts = [self.data_cfg.get(key, default) for key, default in (("num_train", 4000), ("num_val", 1000))]
        seed = self.data_cfg.get("seed", 0)
        for key, value in zip(("num_train", "num_val", "seed"), (*counts, seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
                raise UserError(f"task.data.{key}={value!r} is not valid; use a "
                                f"{'non-negative' if key == 'seed' else 'positive'} integer")
        return spec, counts[0], counts[1], seed

    def _check_scenes_layout(self) -> None:
        """The config's datasets read the scenes' layout: a stock config on the embedded scenes
        stops here, naming the base config that does, before any data is built."""
        for split, scene_split in SCENE_SPLITS.items():
            if LOADERS[split] not in self.cfg:
                continue  # reported by _dataset
            leaf = leaf_dataset(plain(self.cfg[LOADERS[split]]["dataset"]))
            for key, want in self.scenes_layout(scene_split).items():
                if leaf.get(key) != want:
                    raise UserError(
                        f"the embedded scenes (task.data.scenes, default True) need the scenes' dataset "
                        f"settings, but {LOADERS[split]}.dataset.{key} is {leaf.get(key)!r}, not {want!r}: build "
                        f"the config on {self.scenes_base} (as {self.scenes_example} does), or set "
                        "task.data.scenes=False and pass --data-root")

    def _config_data_root(self) -> Path:
        """The config's own ``data_root`` (no ``--data-root``, not the scenes), which must exist."""
        leaf = leaf_dataset(plain(self.cfg[LOADERS["test"]]["dataset"])) if LOADERS["test"] in self.cfg else {}
        root = leaf.get("data_root")
        if not root or not Path(root).expanduser().is_dir():
            raise UserError(f"config '{self.model_name}' reads its own dataset (task.data.scenes=False) from "
                            f"data_root {root!r}, which is not a folder here; pass --data-root pointing at it")
        return Path(root).expanduser()

    def _dataset(self, split: str, pipeline: list | None = None) -> Any:
        """The config's ``split`` ('train' or 'test') dataset over :attr:`root` (the test split
        cut to ``task.eval.max_samples``), built and checked once; with ``pipeline``, a fresh
        one with that pipeline. Missing or malformed files are one-line ``UserError`` s."""
        if pipeline is None and split in self._datasets:
            return self._datasets[split]
        if LOADERS[split] not in self.cfg:
            raise UserError(f"config for '{self.model_name}' has no {LOADERS[split]}; a {self.task_name} config "
                            f"needs train_dataloader and test_dataloader sections (as in any {self.scope} config)")
        cfg = plain(self.cfg[LOADERS[split]]["dataset"])
        leaf = leaf_dataset(cfg)
        leaf["data_root"] = str(self.root if self.root is not None else self._config_data_root())
        if split == "test" and self.eval_cfg.get("max_samples"):
            leaf["indices"] = int(self.eval_cfg["max_samples"])
        if pipeline is not None:
            leaf["pipeline"] = pipeline
        self.check_files(leaf)
        try:
            with self.mm_scope(), quiet_unless(self.progress):  # e.g. pycocotools' "loading annotations..."
                dataset = self.registry("DATASETS").build(cfg)
        except DATASET_ERRORS as err:
            raise UserError(self.dataset_error(split, leaf, err)) from None
        self.check_dataset(dataset)
        if pipeline is None:
            self._datasets[split] = dataset
        return dataset

    def check_files(self, leaf: dict[str, Any]) -> None:
        """Raise ``UserError`` for a file the dataset ``leaf`` needs that is missing (before building it)."""

    def check_dataset(self, dataset: Any) -> None:
        """Raise ``UserError`` for a built dataset that cannot be used (no images, bad labels)."""

    def dataset_error(self, split: str, leaf: dict[str, Any], err: BaseException) -> str:
        """The one line for a dataset that failed to build."""
        return (f"cannot build the {split} dataset '{leaf.get('type')}' under '{leaf.get('data_root')}': "
                f"{type(err).__name__}: {first_line(err)}")
