import pytest
import torch
import torchvision

from examples.custom_cls_model import tiny_convnet
from tasks.models.resnet_cifar import resnet20
from zaqbench.zaq.features import stage_features


@pytest.mark.parametrize("model, size, expected", [
    (lambda: torchvision.models.resnet18(num_classes=10), 64,
     [("layer1", (16, 16)), ("layer2", (8, 8)), ("layer3", (4, 4)), ("layer4", (2, 2))]),
    # block outputs, not the expand conv at the old resolution inside the next block
    (lambda: torchvision.models.mobilenet_v2(num_classes=10), 64,
     [("features.3", (16, 16)), ("features.6", (8, 8)), ("features.13", (4, 4)), ("features.18", (2, 2))]),
    (lambda: resnet20(num_classes=10, in_channels=3), 32, [("layer1", (32, 32)), ("layer2", (16, 16)),
                                                          ("layer3", (8, 8))]),
    # a functional pooling closes the list with the deepest map
    (lambda: tiny_convnet(num_classes=10, in_channels=3, width=4), 16,
     [("stem", (16, 16)), ("stage1", (8, 8)), ("stage2", (4, 4))]),
])
def test_stage_features(model, size, expected):
    net = model().train()
    assert stage_features(net, torch.randn(1, 3, size, size)) == expected
    assert net.training  # mode restored
    assert not any(m._forward_hooks for m in net.modules())  # every probe hook removed


def test_at_most_max_stages_deepest_first_dropped():
    net = torchvision.models.resnet18(num_classes=10)
    names = [n for n, _ in stage_features(net, torch.randn(1, 3, 64, 64), max_stages=2)]
    assert names == ["layer3", "layer4"]
