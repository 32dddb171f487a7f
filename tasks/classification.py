"""Classification adapter (``cls``): CIFAR-style ResNets, any torchvision model, or a
user model registered in ``tasks.models.CLS_MODELS``.

Embedded default data: real Fashion-MNIST images (60k train / 10k test), held in
memory. ``--data-root`` may instead point at torchvision's CIFAR-10 layout
(``cifar-10-batches-py``, also in memory) or at an ImageFolder tree (``val/`` and
optionally ``train/`` class folders, e.g. ImageNet), which is streamed from disk
(``tasks/imagefolder.py``) with its folders mapped onto the model's class indices
(``tasks/class_map.py``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from zaqbench import distributed
from zaqbench.adapter import InputSpec, TaskAdapter
from zaqbench.devices import loader_workers
from zaqbench.errors import UserError
from zaqbench.zaq.features import resolve_modules, stage_features
from zaqbench.registry import TASKS

from . import agreement, imagefolder
from .fashion_mnist import load_fashion_mnist
from .models import CLS_MODELS
from .models.resnet_cifar import CifarResNet

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class TensorSplit:
    """A split held in memory as normalised float images (N, C, H, W) and labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


def _to_tensor(images_uint8: np.ndarray, channels: int, size: int,
               mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> normalised (N, channels, size, size) float32."""
    x = torch.from_numpy(np.array(images_uint8, copy=True)).float().div_(255)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    if x.shape[-1] != size or x.shape[-2] != size:
        pad = (size - x.shape[-1]) // 2
        x = F.pad(x, (pad, size - x.shape[-1] - pad, pad, size - x.shape[-2] - pad)) if pad >= 0 and \
            x.shape[-1] == x.shape[-2] else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous()


#: sub-keys of each ``task`` section; anything else is a typo and an error
SECTION_FIELDS = {
    "model": {"arch", "num_classes", "in_channels", "width", "kwargs"},
    "data": {"image_size", "resize", "mean", "std", "class_map"},
    "teacher": {"epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "max_samples", "workers",
                "threads"},
    "eval": {"batch_size", "max_samples", "subset_seed", "workers", "self_labelled"},
}
#: an FP top-1 below this multiple of chance (100 / classes evaluated) gets a warning
CHANCE_MARGIN = 1.5


@TASKS.register_module(name="cls")
class ClassificationAdapter(TaskAdapter):
    """Image classification scored by top-1.

    ``task.eval.self_labelled=True`` declares that the evaluation labels are the full-precision
    model's own predictions (e.g. photo views filed under the class P predicts), so top-1 is
    agreement with P; ``evaluate`` then also returns ``top5``, ``kl_fp``, ``top1_confident`` and
    ``confident_fraction`` (``tasks/agreement.py``), measured against P's logits. P is the model
    whose weights this adapter loads (``load_state_dict``) or trains (``train_teacher``), or the
    one passed to ``set_fp_model``.
    """

    title = "Classification"
    metric = "top1"
    task_fields = frozenset({"model", "data", "features", "teacher", "eval"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_cfg = dict(self.task_cfg.get("model") or {})
        self.data_cfg = dict(self.task_cfg.get("data") or {})
        self.teacher_cfg = dict(self.task_cfg.get("teacher") or {})
        self.eval_cfg = dict(self.task_cfg.get("eval") or {})
        self._splits: dict[str, TensorSplit] = {}
        self._raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._folders: dict[str, imagefolder.FolderSplit] = {}
        self._auto_features: list[str] | None = None
        self._eval_classes = 0
        self._source = self._detect_source()
        self._fp_model: nn.Module | None = None
        self._class_map_identity: dict[str, str] | None = None
        self._fp_logits = agreement.FPLogitsCache()

    # -- up-front checks ----------------------------------------------------------
    def check(self) -> None:
        """Fields, data layout and class mapping, and the model with its feature maps (one probe
        forward): every misuse is one line before any teacher training or method run."""
        super().check()
        for section, allowed in SECTION_FIELDS.items():
            value = self.task_cfg.get(section)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise UserError(f"task.{section} must be a dict of {', '.join(sorted(allowed))}")
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise UserError(f"unknown field(s) {', '.join(f'task.{section}.{k}' for k in unknown)}; "
                                f"valid fields: {', '.join(sorted(allowed))}")
        for section, key in (("eval", "batch_size"), ("teacher", "batch_size"), ("eval", "max_samples"),
                             ("eval", "workers"), ("teacher", "workers"), ("data", "image_size")):
            value = (self.task_cfg.get(section) or {}).get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < (0 if key == "workers" else 1)):
                raise UserError(f"task.{section}.{key} must be a {'non-negative' if key == 'workers' else 'positive'}"
                                f" integer, got {value!r}")
        if not isinstance(self.eval_cfg.get("self_labelled", False), bool):
            raise UserError(f"task.eval.self_labelled must be True or False, got {self.eval_cfg['self_labelled']!r}")
        self._check_data()
        self._check_model()

    def _check_data(self) -> None:
        if self._source == "imagefolder":
            root = Path(str(self.data_root))
            if not (root / "val").is_dir():
                raise UserError(f"ImageFolder data needs '{root / 'val'}' (the evaluation split); "
                                f"lay out {root}/{{train,val}}/<class>/<image files>")
            self._folder("test")
            if (root / "train").exists():
                self._folder("train")
        else:
            self._load_raw("test")
            self._load_raw("train")

    def _check_model(self) -> None:
        model = self.build_model()
        spec = self.input_spec
        example = torch.randn(spec.shape(1), generator=torch.Generator().manual_seed(0)).to(self.device)
        names = self.task_cfg.get("features")
        if names:
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise UserError(f"task.features must be a list of module names, got {names!r}")
            resolve_modules(model, list(names))
            print(f"[zaqbench] cls features (task.features): {', '.join(names)}", file=sys.stderr)
        else:
            stages = self._probe_features(model, example)
            print(f"[zaqbench] cls features (automatic: last module at each resolution): "
                  f"{', '.join(f'{n} ({h}x{w})' for n, (h, w) in stages)}", file=sys.stderr)
        num_classes = int(self.model_cfg.get("num_classes", 10))
        try:
            with torch.no_grad():
                out = model.eval()(example)
        except RuntimeError as err:
            raise UserError(f"model '{self.arch}' cannot take an input of shape {tuple(example.shape)}: "
                            f"{str(err).splitlines()[0]}; check task.model.in_channels and task.data.image_size") from None
        if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"model '{self.arch}' returns {shape} for one image, not (1, {num_classes}) logits; "
                            "check task.model.num_classes")

    def _probe_features(self, model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, int]]]:
        stages = stage_features(model, example)
        if not stages:
            raise UserError(f"no feature maps found automatically in '{self.arch}' (no 4-d outputs); "
                            "set task.features to module names in the config")
        self._auto_features = [n for n, _ in stages]
        return stages

    # -- data -------------------------------------------------------------------
    def _detect_source(self) -> str:
        root = Path(self.data_root) if self.data_root else None
        if root is None:
            return "fashion_mnist"
        if not root.exists():
            raise UserError(f"--data-root '{root}' does not exist")
        if (root / "cifar-10-batches-py").is_dir():
            return "cifar10"
        if (root / "val").is_dir() or (root / "train").is_dir():
            return "imagefolder"
        return "fashion_mnist"

    @property
    def dataset_name(self) -> str:
        return {"fashion_mnist": "fashion-mnist", "cifar10": "cifar10"}.get(
            self._source, Path(str(self.data_root)).name)

    @property
    def input_spec(self) -> InputSpec:
        size = int(self.data_cfg.get("image_size", 28))
        channels = int(self.model_cfg.get("in_channels", 1))
        if self._source != "fashion_mnist" and channels != 3:
            channels = 3
        mean, std = ((FASHION_MNIST_MEAN,) * channels, (FASHION_MNIST_STD,) * channels) \
            if self._source == "fashion_mnist" else ((CIFAR_MEAN, CIFAR_STD) if self._source == "cifar10"
                                                     else (IMAGENET_MEAN, IMAGENET_STD))
        mean = tuple(float(m) for m in self.data_cfg.get("mean") or mean)
        std = tuple(float(s) for s in self.data_cfg.get("std") or std)
        if len(mean) != channels or len(std) != channels:
            raise UserError(f"task.data.mean/std need {channels} values (one per input channel)")
        return InputSpec(channels, size, size, mean, std)

    def _load_raw(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images and labels of an in-memory source; a missing or damaged file is one line."""
        if name not in self._raw:
            if self._source == "fashion_mnist":
                self._raw[name] = load_fashion_mnist(name, self.data_root, self.cache_dir / "downloads")
            else:
                self._raw[name] = _load_cifar10(Path(str(self.data_root)), name)
        return self._raw[name]

    def _folder(self, name: str) -> imagefolder.FolderSplit:
        if name not in self._folders:
            sub = "val" if name == "test" else "train"
            self._folders[name] = imagefolder.scan_split(Path(str(self.data_root)) / sub,
                                                         self.data_cfg.get("class_map"),
                                                         int(self.model_cfg.get("num_classes", 10)))
        return self._folders[name]

    def _image_files(self, name: str) -> imagefolder.ImageFiles:
        spec = self.input_spec
        resize = int(self.data_cfg.get("resize") or round(spec.height / 0.875))
        return imagefolder.ImageFiles(self._folder(name),
                                      imagefolder.eval_transform(spec.height, resize, spec.mean, spec.std))

    def _eval_indices(self, labels: Sequence[int]) -> list[int] | None:
        """``task.eval.max_samples``: a seeded, class-balanced subset of the evaluation split."""
        limit = self.eval_cfg.get("max_samples")
        if not limit or limit >= len(labels):
            return None
        return imagefolder.balanced_subset(labels, int(limit), int(self.eval_cfg.get("subset_seed", 0)))

    def split(self, name: str) -> TensorSplit:
        """'train' or 'test' of an in-memory source (Fashion-MNIST, CIFAR-10), normalised."""
        if self._source == "imagefolder":
            raise UserError("ImageFolder data is streamed, not held in memory")  # internal misuse
        if name not in self._splits:
            spec = self.input_spec
            images, labels = self._load_raw(name)
            if name == "test":
                keep = self._eval_indices(labels.tolist())
                if keep is not None:
                    images, labels = images[keep], labels[keep]
            elif self.teacher_cfg.get("max_samples"):
                images, labels = images[:self.teacher_cfg["max_samples"]], labels[:self.teacher_cfg["max_samples"]]
            x = _to_tensor(images, spec.channels, spec.height, spec.mean, spec.std)
            if self.device.type == "cuda":  # pinned: batches copy to the GPU asynchronously
                x = x.pin_memory()
            self._splits[name] = TensorSplit(x, torch.as_tensor(labels, dtype=torch.long))
        return self._splits[name]

    def data_identity(self) -> dict[str, str]:
        """The base identity plus, for a class map given as a file, a hash of its content: the
        labels come from it, so an edited map (same path) must not reuse a teacher, a row or a
        config hash made with the old one."""
        if self._class_map_identity is None:  # read once, as the base class computes its part once
            identity = super().data_identity()
            setting = self.data_cfg.get("class_map")
            path = Path(str(setting)).expanduser() if setting else None
            if identity and path is not None and path.is_file():
                identity = {**identity, "class_map": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
            self._class_map_identity = identity
        return self._class_map_identity

    def check_real_data(self) -> None:
        if self._source == "imagefolder":
            self._train_folder()

    def _train_folder(self) -> imagefolder.FolderSplit:
        if not (Path(str(self.data_root)) / "train").is_dir():
            raise UserError(f"training a teacher or real-data calibration needs '{Path(str(self.data_root)) / 'train'}'"
                            "; add a train/ split or pass --checkpoint and leave out the real-data methods (real-ptq, real-kd)")
        return self._folder("train")

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """Random training images; from an ImageFolder only the drawn ``batch_size * num_batches``
        files are decoded."""
        g = torch.Generator().manual_seed(seed)
        if self._source == "imagefolder":
            n = len(self._train_folder().samples)
            order = torch.randperm(n, generator=g).repeat(math.ceil(batch_size * num_batches / n))
            picked = order[:batch_size * num_batches].tolist()
            batches = imagefolder.loader(self._image_files("train"), picked, batch_size, self._workers("teacher"))
            for x, _ in imagefolder.stream(batches):
                yield x.to(self.device)
            return
        train = self.split("train")
        order = torch.randperm(len(train), generator=g)
        for i in range(num_batches):
            idx = order[(i * batch_size) % len(train):][:batch_size]
            yield train.images[idx].to(self.device)

    def _workers(self, section: str) -> int:
        """DataLoader processes for ``section``: ``task.<section>.workers`` (the teacher falls back
        to eval's; default 2), within the cores this process has (``loader_workers``)."""
        cfg = self.teacher_cfg if section == "teacher" else self.eval_cfg
        return loader_workers(int(cfg.get("workers", self.eval_cfg.get("workers", 2))))

    # -- model ------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return str(self.model_cfg.get("arch", "resnet20"))

    @functools.cached_property
    def model_label(self) -> str:
        """The config name, plus ``(arch)`` when ``task.model.arch`` was overridden away from the
        config file's own architecture (e.g. ``resnet20(mobilenet_v2)``)."""
        own = self.arch
        filename = getattr(self.cfg, "filename", None)
        if filename:
            from mmengine.config import Config

            own = str(Config.fromfile(filename).get("task", {}).get("model", {}).get("arch", "resnet20"))
        return self.model_name if own == self.arch else f"{self.model_name}({self.arch})"

    def build_model(self) -> nn.Module:
        arch = self.arch
        num_classes = int(self.model_cfg.get("num_classes", 10))
        spec = self.input_spec
        kwargs = dict(self.model_cfg.get("kwargs") or {})
        if arch in CLS_MODELS.module_dict:
            try:
                model = CLS_MODELS.get(arch)(num_classes=num_classes, in_channels=spec.channels, **kwargs)
            except TypeError as err:
                raise UserError(f"model builder '{arch}' rejects its arguments: {err}; check task.model.kwargs") from None
        elif arch.startswith("cifar_resnet") or arch == "resnet20":
            depth = 20 if arch == "resnet20" else int(arch.removeprefix("cifar_resnet"))
            model = CifarResNet(depth, num_classes, spec.channels, int(self.model_cfg.get("width", 16)))
        else:
            import torchvision

            available = torchvision.models.list_models(torchvision.models)
            if arch not in available:
                registered = ", ".join(sorted(CLS_MODELS.module_dict)) or "none"
                raise UserError(f"unknown classification model '{arch}'; use resnet20, a model registered in "
                                f"tasks.models.CLS_MODELS (now: {registered}) or a torchvision model name such as "
                                f"{', '.join(available[:6])}, ...")
            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        return model.to(self.device)

    @property
    def feature_names(self) -> list[str]:
        names = self.task_cfg.get("features")
        if names:
            return list(names)
        if self._auto_features is None:
            model = self.build_model()
            self._probe_features(model, torch.zeros(self.input_spec.shape(1), device=self.device))
        return list(self._auto_features or [])

    def _train_batches(self, batch_size: int, g: torch.Generator) -> tuple[int, Callable[[], Iterator]]:
        """(steps per epoch, a function giving one epoch of (images, labels) in a fresh random order)."""
        if self._source == "imagefolder":
            self._train_folder()
            files = self._image_files("train")

            def epoch() -> Iterator:
                seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
                return imagefolder.stream(imagefolder.loader(files, None, batch_size, self._workers("teacher"), seed))
            return math.ceil(len(files) / batch_size), epoch
        train = self.split("train")

        def epoch() -> Iterator:
            order = torch.randperm(len(train), generator=g)
            for i in range(0, len(train), batch_size):
                idx = order[i:i + batch_size]
                yield train.images[idx], train.labels[idx]
        return math.ceil(len(train) / batch_size), epoch

    def train_teacher(self, model: nn.Module) -> None:
        """SGD + one-cycle schedule with crop/flip augmentation on the train split."""
        cfg = {"epochs": 4, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "seed": 0,
               **self.teacher_cfg}
        g = torch.Generator().manual_seed(int(cfg["seed"]))
        torch.manual_seed(int(cfg["seed"]))
        steps_per_epoch, epoch = self._train_batches(int(cfg["batch_size"]), g)
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                              weight_decay=cfg["weight_decay"], nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], epochs=cfg["epochs"],
                                                    steps_per_epoch=steps_per_epoch)
        model.train()
        bar = tqdm(total=cfg["epochs"] * steps_per_epoch, desc="teacher", dynamic_ncols=True,
                   disable=not self.progress)
        for _ in range(cfg["epochs"]):
            for images, labels in epoch():
                x = _augment(images, g).to(self.device)
                loss = F.cross_entropy(model(x), labels.to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()
        self.set_fp_model(model)

    def teacher_key(self) -> dict[str, Any]:
        return {**super().teacher_key(), "data": self.data_cfg, "source": self._source}

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Strict; a CIFAR ResNet checkpoint of the official ZAQ code names the classifier
        ``linear`` where this suite's CifarResNet says ``fc`` (every other key is the same)."""
        if isinstance(model, CifarResNet) and "linear.weight" in state and "fc.weight" not in state:
            state = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v for k, v in state.items()}
        super().load_state_dict(model, state)
        self.set_fp_model(model)

    def set_fp_model(self, model: nn.Module) -> None:
        """Name P, the reference of the self-labelled metrics (``task.eval.self_labelled``)."""
        self._fp_model = model

    @property
    def self_labelled(self) -> bool:
        """``task.eval.self_labelled``: the evaluation labels are P's own predictions."""
        return bool(self.eval_cfg.get("self_labelled", False))

    # -- score --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        sums = self._agreement_sums(model) if self.self_labelled else None
        was_training = model.training
        model.eval()
        correct = total = 0
        bs = int(self.eval_cfg.get("batch_size", 500))
        seen: set[int] = set()
        try:
            for images, labels in self._eval_batches(bs):
                logits = model(images.to(self.device))
                correct += (logits.argmax(1).cpu() == labels).sum().item()
                total += len(labels)
                seen.update(labels.tolist())
                if sums is not None:
                    sums.add(logits, labels)
        finally:
            model.train(was_training)
        self._eval_classes = len(seen)  # this rank's classes: only for the chance-level warning
        correct, total = distributed.all_sum([correct, total])  # exact: integer counts over ranks
        metrics = {"top1": 100.0 * correct / max(1, total)}
        if sums is not None:
            if sums.reference is None:  # P's own evaluation: keep its logits for the quantized models
                self._fp_logits.put(agreement.weights_fingerprint(model), self._eval_set_key(), sums.recorded())
            metrics.update(agreement.agreement_metrics(*distributed.all_sum(sums.totals())))
        return metrics

    def _agreement_sums(self, model: nn.Module) -> agreement.AgreementSums:
        """Sums against P's cached logits; when ``model`` is P itself and nothing is cached yet, its
        own evaluation fills the cache; otherwise P is evaluated first, once per evaluation set."""
        if self._fp_model is None:
            raise UserError("task.eval.self_labelled needs the full-precision model: load its weights through the "
                            "adapter (load_state_dict, as the runner does) or call set_fp_model(model) first")
        key, fingerprint = self._eval_set_key(), agreement.weights_fingerprint(self._fp_model)
        cached = self._fp_logits.get(fingerprint, key)
        if cached is None and model is not self._fp_model:
            self.evaluate(self._fp_model)
            cached = self._fp_logits.get(fingerprint, key)
        return agreement.AgreementSums(reference=cached)

    def _eval_set_key(self) -> str:
        """What decides the evaluated views and their order: the data and its transform, the subset,
        the batch size (a sample's logits may differ in the last bit with it) and this rank's shard."""
        return json.dumps({"source": self._source, "data": self.data_identity(), "data_cfg": self.data_cfg,
                           "eval": {k: v for k, v in self.eval_cfg.items() if k != "workers"},
                           "rank": distributed.rank(), "world": distributed.world_size()},
                          sort_keys=True, default=str)

    def _eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._source == "imagefolder":
            files = self._image_files("test")
            keep = self._eval_indices(self._folder("test").labels)
            keep = list(distributed.shard(keep if keep is not None else range(len(files))))  # torchrun: W-th images
            batches = imagefolder.loader(files, keep, batch_size, self._workers("eval"))
            yield from tqdm(imagefolder.stream(batches), total=len(batches), desc="evaluating", leave=False,
                            disable=not self.progress)
            return
        test = self.split("test")
        for i in distributed.shard(range(0, len(test), batch_size)):  # under torchrun: every W-th batch
            yield test.images[i:i + batch_size], test.labels[i:i + batch_size]

    def fp_warning(self, metrics: dict[str, float]) -> str | None:
        """An FP top-1 at chance level almost always means wrong labels, not a bad model; on
        self-labelled data an FP top-1 below 100 % means some labels are not P's predictions."""
        if self.self_labelled and metrics.get("top1", 100.0) < 100.0:
            return (f"task.eval.self_labelled is set but FP top-1 is {metrics['top1']:.2f} %: some labels are not the "
                    "full-precision model's own predictions, so top-1 is not agreement with it (top5, kl_fp and "
                    "top1_confident are still measured against its predictions)")
        if self._eval_classes < 2:
            return None
        chance = 100.0 / self._eval_classes
        if metrics.get("top1", 100.0) > CHANCE_MARGIN * chance:
            return None
        return (f"FP top-1 {metrics['top1']:.2f} % is at chance level ({chance:.2f} % for {self._eval_classes} "
                "classes): check that the checkpoint matches the config (task.model.arch, num_classes), that the "
                "class folders map to the model's class indices (task.data.class_map), and the normalisation "
                "(task.data.mean/std, image_size)")


def _load_cifar10(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's CIFAR-10 files (md5-checked), as (N, 32, 32, 3) uint8 and labels."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    expected = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise UserError(f"'{folder}' lacks {len(missing)} of CIFAR-10's {len(expected)} files ({', '.join(missing)})"
                        "; extract torchvision's cifar-10-python.tar.gz there (https://www.cs.toronto.edu/~kriz/cifar.html)")
    try:
        ds = CIFAR10(str(root), train=name == "train", download=False)
    except RuntimeError:  # torchvision's md5 check of every file
        raise UserError(f"CIFAR-10 files in '{folder}' are truncated or corrupt (md5 check failed); "
                        "extract cifar-10-python.tar.gz again") from None
    except (EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise UserError(f"CIFAR-10 files in '{folder}' are truncated or corrupt ({str(err).splitlines()[0]}); "
                        "extract cifar-10-python.tar.gz again") from None
    return ds.data, np.asarray(ds.targets, dtype=np.int64)


def _augment(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero-padded by ``pad`` in normalised space) and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()
