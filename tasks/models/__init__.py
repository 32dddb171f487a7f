"""Classification models: the CIFAR ResNets of the embedded defaults, and ``CLS_MODELS``, the
registry through which a user's own architecture comes in.

A config names a registered builder in ``task.model.arch`` and imports the module that
registers it with mmengine's ``custom_imports`` (see ``examples/custom_cls_model.py``).
The builder is called as ``builder(num_classes=..., in_channels=..., **task.model.kwargs)``
and returns an ``nn.Module`` mapping (N, in_channels, H, W) to (N, num_classes) logits.
"""
from mmengine.registry import Registry

CLS_MODELS = Registry("zaqbench classification model")
