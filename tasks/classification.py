"""Classification adapter (``cls``): CIFAR-style ResNet-20 or any torchvision model.

Embedded default data: real Fashion-MNIST images (60k train / 10k test).
``--data-root`` may instead point at an ImageFolder tree (``train/`` and
``val/`` class folders, e.g. an ImageNet val set under ``val/``) or at
torchvision's CIFAR-10 layout (``cifar-10-batches-py``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from zaqbench import distributed
from zaqbench.adapter import InputSpec, TaskAdapter
from zaqbench.devices import loader_options
from zaqbench.errors import UserError
from zaqbench.registry import TASKS

from .fashion_mnist import load_fashion_mnist
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


@TASKS.register_module(name="cls")
class ClassificationAdapter(TaskAdapter):
    metric = "top1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_cfg = dict(self.task_cfg.get("model", {}))
        self.data_cfg = dict(self.task_cfg.get("data", {}))
        self.teacher_cfg = dict(self.task_cfg.get("teacher", {}))
        self.eval_cfg = dict(self.task_cfg.get("eval", {}))
        self._splits: dict[str, TensorSplit] = {}
        self._source = self._detect_source()

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
        return InputSpec(channels, size, size, mean, std)

    def split(self, name: str) -> TensorSplit:
        """'train' or 'test', loaded once into memory (ImageFolder data is streamed instead)."""
        if name not in self._splits:
            spec = self.input_spec
            if self._source == "fashion_mnist":
                images, labels = load_fashion_mnist(name, self.data_root, self.cache_dir / "downloads")
            elif self._source == "cifar10":
                from torchvision.datasets import CIFAR10

                ds = CIFAR10(str(self.data_root), train=name == "train", download=False)
                images, labels = ds.data, np.asarray(ds.targets)
            else:
                return self._imagefolder_split(name)
            limit = self.eval_cfg.get("max_samples") if name == "test" else self.teacher_cfg.get("max_samples")
            if limit:
                images, labels = images[:limit], labels[:limit]
            x = _to_tensor(images, spec.channels, spec.height, spec.mean, spec.std)
            if self.device.type == "cuda":  # pinned: batches copy to the GPU asynchronously
                x = x.pin_memory()
            self._splits[name] = TensorSplit(x, torch.as_tensor(labels, dtype=torch.long))
        return self._splits[name]

    def _imagefolder_split(self, name: str) -> TensorSplit:
        from torchvision import datasets, transforms

        folder = Path(str(self.data_root)) / ("val" if name == "test" else "train")
        if not folder.is_dir():
            raise UserError(f"ImageFolder data needs '{folder}'; lay out {self.data_root}/{{train,val}}/<class>/*")
        spec = self.input_spec
        tf = transforms.Compose([transforms.Resize(int(spec.height * 1.14)), transforms.CenterCrop(spec.height),
                                 transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
        ds = datasets.ImageFolder(str(folder), transform=tf)
        limit = self.eval_cfg.get("max_samples") or len(ds)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(min(limit, len(ds)))),
                                             batch_size=64, **loader_options(self.device))
        xs, ys = zip(*[(x, y) for x, y in tqdm(loader, desc=f"loading {folder}", leave=False,
                                                       disable=not self.progress)])
        self._splits[name] = TensorSplit(torch.cat(xs), torch.cat(ys))
        return self._splits[name]

    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        train = self.split("train")
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train), generator=g)
        for i in range(num_batches):
            idx = order[(i * batch_size) % len(train):][:batch_size]
            yield train.images[idx].to(self.device)

    # -- model ------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        arch = self.model_cfg.get("arch", "resnet20")
        num_classes = int(self.model_cfg.get("num_classes", 10))
        spec = self.input_spec
        if arch.startswith("cifar_resnet") or arch == "resnet20":
            depth = 20 if arch == "resnet20" else int(arch.removeprefix("cifar_resnet"))
            model = CifarResNet(depth, num_classes, spec.channels, int(self.model_cfg.get("width", 16)))
        else:
            import torchvision

            available = torchvision.models.list_models(torchvision.models)
            if arch not in available:
                raise UserError(f"unknown classification model '{arch}'; use resnet20 or a torchvision "
                                f"model name such as {', '.join(available[:6])}, ...")
            model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        return model.to(self.device)

    @property
    def feature_names(self) -> list[str]:
        names = self.task_cfg.get("features")
        if names:
            return list(names)
        arch = self.model_cfg.get("arch", "resnet20")
        if arch == "resnet20" or arch.startswith("cifar_resnet"):
            return ["layer1", "layer2", "layer3"]
        if arch.startswith(("resnet", "resnext", "wide_resnet")):
            return ["layer1", "layer2", "layer3", "layer4"]
        raise UserError(f"no default feature maps for '{arch}'; set task.features to module names in the config")

    def train_teacher(self, model: nn.Module) -> None:
        """SGD + one-cycle schedule with crop/flip augmentation on the train split."""
        cfg = {"epochs": 4, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "seed": 0,
               **self.teacher_cfg}
        train = self.split("train")
        g = torch.Generator().manual_seed(int(cfg["seed"]))
        torch.manual_seed(int(cfg["seed"]))
        steps_per_epoch = math.ceil(len(train) / cfg["batch_size"])
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                              weight_decay=cfg["weight_decay"], nesterov=True)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], epochs=cfg["epochs"],
                                                    steps_per_epoch=steps_per_epoch)
        model.train()
        bar = tqdm(total=cfg["epochs"] * steps_per_epoch, desc="teacher", dynamic_ncols=True,
                   disable=not self.progress)
        for _ in range(cfg["epochs"]):
            order = torch.randperm(len(train), generator=g)
            for i in range(steps_per_epoch):
                idx = order[i * cfg["batch_size"]:(i + 1) * cfg["batch_size"]]
                x = _augment(train.images[idx], g).to(self.device)
                loss = F.cross_entropy(model(x), train.labels[idx].to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()

    def teacher_key(self) -> dict[str, Any]:
        return {**super().teacher_key(), "data": self.data_cfg, "source": self._source}

    # -- score --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        test = self.split("test")
        was_training = model.training
        model.eval()
        correct = 0
        bs = int(self.eval_cfg.get("batch_size", 500))
        for i in distributed.shard(range(0, len(test), bs)):  # under torchrun: every W-th batch
            logits = model(test.images[i:i + bs].to(self.device, non_blocking=True))
            correct += (logits.argmax(1).cpu() == test.labels[i:i + bs]).sum().item()
        model.train(was_training)
        correct = distributed.all_sum([correct])[0]  # exact: integer counts
        return {"top1": 100.0 * correct / max(1, len(test))}


def _augment(x: torch.Tensor, g: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop (zero-padded by ``pad`` in normalised space) and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out.contiguous()
