"""Plumbing check for a classification checkpoint without any real photos.

Writes synthetic 256x256 PNG patterns (stripes, checkerboards, colour fields) into
``<out>/{train,val}/<wnid>/``, each in the folder of the ImageNet class the model
itself predicts for it (after the evaluation transform: resize 256 = no-op, centre
crop 224). Running ``tools/run_task.py`` on that folder must then give FP top-1
100 %: that checks the folder -> WordNet id -> class index mapping, the transform
and the streaming end to end. It says nothing about accuracy on real images.

    tools/self_labelled_imagefolder.py --config configs/cls/mobilenet_v2_imagenet.py \
        --checkpoint mobilenet_v2-b0353104.pth --out /tmp/selfcheck --images 64 --repeat 1
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from zaqbench.checkpoint import extract_state_dict, load_file

from .class_map import imagenet_aliases
from .imagefolder import eval_transform


def pattern(i: int, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: stripes, checkerboards or smooth colour fields, by ``i % 3``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    colours = rng.integers(0, 256, (2, 3))
    if i % 3 == 0:
        mask = np.sin(2 * np.pi * rng.uniform(2, 40) * (xx * np.cos(i) + yy * np.sin(i))) > 0
    elif i % 3 == 1:
        k = rng.integers(2, 32)
        mask = (np.floor(xx * k) + np.floor(yy * k)) % 2 == 0
    else:
        mask = rng.random((8, 8)).repeat(size // 8, 0).repeat(size // 8, 1) > 0.5
    return np.where(mask[..., None], colours[0], colours[1]).astype(np.uint8)


def main() -> int:
    from mmengine.config import Config
    from PIL import Image
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=int, default=64, help="distinct synthetic images")
    p.add_argument("--repeat", type=int, default=1, help="hard links per image in val/ (scale tests)")
    args = p.parse_args()
    cfg = Config.fromfile(args.config).task
    model = torchvision.models.get_model(cfg.model.arch, weights=None, num_classes=1000)
    model.load_state_dict(extract_state_dict(load_file(args.checkpoint), args.checkpoint))
    model.eval()
    tf = eval_transform(cfg.data.image_size, cfg.data.resize, cfg.data.mean, cfg.data.std)
    wnids = [sorted(a for a in names if a.startswith("n") and a[1:].isdigit())[0] for names in imagenet_aliases()]
    rng = np.random.default_rng(0)
    out = Path(args.out)
    counts: dict[str, int] = {}
    for i in range(args.images):
        image = Image.fromarray(pattern(i, rng))
        with torch.no_grad():
            idx = int(model(tf(image)[None]).argmax(1))
        for split in ("train", "val"):
            folder = out / split / wnids[idx]
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:05d}.png")
        for r in range(1, args.repeat):
            os.link(out / "val" / wnids[idx] / f"{i:05d}.png", out / "val" / wnids[idx] / f"{i:05d}-{r}.png")
        counts[wnids[idx]] = counts.get(wnids[idx], 0) + 1
    print(f"{args.images} images in {len(counts)} classes, x{args.repeat} in val/: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
