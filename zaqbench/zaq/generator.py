"""The ZAQ generator: z ~ N(0, I) -> a normalised image batch of any H x W.

For 32 px it is the official architecture: Linear -> BN -> x2 up ->
conv3x3(128)+BN+LeakyReLU(0.2) -> x2 up -> conv3x3(64)+BN+LeakyReLU ->
conv3x3(C) -> Tanh -> BatchNorm(affine=False). Larger inputs get more x2
stages (each conv3x3(128)+BN+LeakyReLU) so the seed map stays about 8 px,
which keeps the Linear layer small for detection/segmentation sizes.

Output modes (``output``):

* ``bn`` (official): Tanh -> BatchNorm(affine=False). It fixes only each
  channel's batch mean and std, so single pixels can go anywhere: measured on
  ResNet-20 / Fashion-MNIST, the batch minimum fell from -2.3 to -43 within 40
  iterations while real normalised images span -0.81..2.02.
* ``valid-range``: Tanh mapped affinely onto the normalised image of pixel
  values [0, 1], ``[(0 - mean) / std, (1 - mean) / std]`` per channel, so every
  generated image is one a camera could produce.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..adapter import InputSpec
from ..errors import UserError


def upsample_stages(height: int, width: int, seed_size: int = 8) -> int:
    """Number of x2 upsamplings: at least 2 (the official design), more while the
    seed map would exceed ``seed_size`` and both sides stay divisible."""
    if height % 4 or width % 4 or height < 8 or width < 8:
        raise UserError(f"the generator cannot produce {height}x{width} images; "
                        "height and width must be multiples of 4 and at least 8")
    stages = max(2, math.ceil(math.log2(min(height, width) / seed_size)))
    while stages > 2 and (height % 2**stages or width % 2**stages):
        stages -= 1
    return stages


GENERATOR_OUTPUTS = ("bn", "valid-range")


class _NearestUpsample2x(torch.autograd.Function):
    """``F.interpolate(x, scale_factor=2)`` (nearest): the same values, copied by one strided
    expand, and its backward the very operator autograd runs for ``interpolate``, so G's
    gradients are bit for bit the same. torch's CPU forward converts (N, C, H, W) to channels-last
    and back, three copies of the output where one suffices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, 2H, 2W)
        ctx.input_size = list(x.shape)
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.upsample_nearest2d_backward(grad, list(grad.shape[-2:]), ctx.input_size, 2.0, 2.0)


class NearestUpsample2x(nn.Module):
    """x2 nearest-neighbour upsampling, as ``nn.Upsample(scale_factor=2)`` (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NearestUpsample2x.apply(x)


def valid_input_range(spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (lo, hi), each (1, C, 1, 1): pixel values 0 and 1 after normalisation."""
    mean = torch.as_tensor(spec.mean, dtype=torch.float32).expand(spec.channels).reshape(1, -1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=torch.float32).expand(spec.channels).reshape(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


class Generator(nn.Module):
    def __init__(self, spec: InputSpec, nz: int = 256, channels: int = 128, output: str = "bn") -> None:
        super().__init__()
        if output not in GENERATOR_OUTPUTS:
            raise UserError(f"generator output must be one of {', '.join(GENERATOR_OUTPUTS)}, got {output!r}")
        self.output = output
        self.nz = nz
        self.spec = spec
        stages = upsample_stages(spec.height, spec.width)
        self.seed_hw = (spec.height // 2**stages, spec.width // 2**stages)
        self.channels = channels
        self.project = nn.Linear(nz, channels * self.seed_hw[0] * self.seed_hw[1])
        self.seed_bn = nn.BatchNorm2d(channels)
        blocks: list[nn.Module] = []
        in_ch = channels
        for i in range(stages):
            out_ch = channels if i < stages - 1 else channels // 2
            blocks += [NearestUpsample2x(), nn.Conv2d(in_ch, out_ch, 3, 1, 1),
                       nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)]
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Conv2d(in_ch, spec.channels, 3, 1, 1), nn.Tanh()]
        if output == "bn":
            head.append(nn.BatchNorm2d(spec.channels, affine=False))
        self.to_image = nn.Sequential(*head)
        lo, hi = valid_input_range(spec)
        # buffers (not persistent: derived from the spec) so they follow .to(device)
        self.register_buffer("out_lo", lo, persistent=False)
        self.register_buffer("out_hi", hi, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, nz) -> (N, C, H, W) in the model's normalised input space."""
        x = self.project(z).view(z.shape[0], self.channels, *self.seed_hw)
        x = self.to_image(self.blocks(self.seed_bn(x)))
        if self.output == "valid-range":
            x = self.out_lo + (x + 1) * 0.5 * (self.out_hi - self.out_lo)
        return x
