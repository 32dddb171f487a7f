"""A registered test model that classifies an image by its dominant colour, so that a
synthetic ImageFolder of red / green / blue images gets a known, confident prediction.
Loaded by configs through mmengine's ``custom_imports = dict(imports=['tests.colour_model'])``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from tasks.models import CLS_MODELS

#: ImageNet-1k indices and WordNet ids the colours stand for (tench, goldfish, great white shark)
WNIDS = ("n01440764", "n01443537", "n01484850")
COLOURS = ((230, 20, 20), (20, 230, 20), (20, 20, 230))


class ColourNet(nn.Module):
    """(N, 3, H, W) -> (N, num_classes): logit ``indices[c]`` is the mean of channel c, others 0."""

    def __init__(self, num_classes: int, in_channels: int, indices: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__()
        self.mix = nn.Conv2d(in_channels, 3, 1, bias=False)
        self.head = nn.Linear(3, num_classes, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.head.weight.zero_()
            for c, i in enumerate(indices):
                self.head.weight[i, c] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x).mean((2, 3)))


@CLS_MODELS.register_module(name="colour_net")
def colour_net(num_classes: int, in_channels: int, indices: Sequence[int] = (0, 1, 2)) -> ColourNet:
    return ColourNet(num_classes, in_channels, indices)


def make_imagefolder(root: Path, per_class: int = 4, names: Sequence[str] = WNIDS, size=(40, 30)) -> Path:
    """root/{train,val}/<name>/<i>.png, class k filled with COLOURS[k] plus a little seeded noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, colour in zip(names, COLOURS):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root
