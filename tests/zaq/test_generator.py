import copy

import torch
from torch import nn

from zaqbench.adapter import InputSpec
from zaqbench.zaq.generator import Generator, NearestUpsample2x


def test_upsampling_gives_interpolates_values_and_gradients_bit_for_bit():
    """G with its x2 upsampling and G with ``nn.Upsample(scale_factor=2)`` in its place: the same
    images and the same parameter gradients, bit for bit (three stages: 64 px)."""
    torch.manual_seed(0)
    ours = Generator(InputSpec(3, 64, 64), nz=8, channels=16)
    reference = copy.deepcopy(ours)
    replaced = 0
    for name, module in list(reference.blocks.named_children()):
        if isinstance(module, NearestUpsample2x):
            reference.blocks[int(name)] = nn.Upsample(scale_factor=2)
            replaced += 1
    assert replaced == 3
    z = torch.randn(5, 8)
    images, expected = ours(z), reference(z)
    assert torch.equal(images, expected)
    upstream = torch.randn_like(images)
    grads = torch.autograd.grad(images, list(ours.parameters()), upstream)
    expected_grads = torch.autograd.grad(expected, list(reference.parameters()), upstream)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected_grads))
