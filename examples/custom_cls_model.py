"""A user's own classification model, brought in through the ``CLS_MODELS`` registry.

Neither torchvision nor a CIFAR ResNet: a plain three-stage CNN. Registering it is
all it takes; ``configs/cls/example_custom_model.py`` names it in ``task.model.arch``
and imports this module with mmengine's ``custom_imports``. Its default feature maps
are found automatically (the output of each stage before the resolution halves).
"""
from __future__ import annotations

import torch
from torch import nn

from tasks.models import CLS_MODELS


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyConvNet(nn.Module):
    """(N, in_channels, H, W) -> (N, num_classes): three stages, each halving H and W after the first."""

    def __init__(self, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        self.stem = _stage(in_channels, width, 1)
        self.stage1 = _stage(width, 2 * width, 2)
        self.stage2 = _stage(2 * width, 4 * width, 2)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(x.mean((2, 3)))


@CLS_MODELS.register_module(name="tiny_convnet")
def tiny_convnet(num_classes: int, in_channels: int, width: int = 16) -> TinyConvNet:
    return TinyConvNet(num_classes, in_channels, width)
