"""Plumbing check for a classification checkpoint without any real photos.

Writes synthetic 256x256 PNG patterns (stripes, checkerboards, colour fields) into
``<out>/{train,val}/<wnid>/``, each in the folder of the ImageNet class the model
itself predicts for it (after the evaluation transform: resize 256 = no-op, centre
crop 224). Running ``tools/run_task.py`` on that folder must then give FP top-1
100 %: that checks the folder -> WordNet id -> class index mapping, the transform
and the streaming end to end. It says nothing about accuracy on real images.

    tools/self_labelled_imagefolder.py --config configs/cls/mobilenet_v2_imagenet.py \
        --checkpoint mobilenet_v2-b0353104.pth --out /tmp/selfcheck --images 64 --repeat 1

``--out`` must be a new or empty folder; it is written whole or not at all. The checkpoint is
loaded weights-only unless ``--trust-checkpoint`` is given, as in ``tools/run_task.py``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from zaqbench.checkpoint import describe_key_mismatch, extract_state_dict, load_file
from zaqbench.errors import UserError

from .class_map import imagenet_aliases
from .classification import IMAGENET_MEAN, IMAGENET_STD
from .imagefolder import check_new_folder, eval_transform, new_folder


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


def build_parser() -> argparse.ArgumentParser:
    from zaqbench.run.runner import OneLineParser

    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="an ImageNet classification config with a torchvision "
                                                   "architecture, e.g. configs/cls/mobilenet_v2_imagenet.py")
    p.add_argument("--checkpoint", required=True, help="the model's weights (a state dict)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow arbitrary unpickling of --checkpoint (only for files you trust)")
    p.add_argument("--out", required=True, help="a new or empty folder to write (train/ and val/)")
    p.add_argument("--images", type=int, default=64, help="distinct synthetic images (default 64)")
    p.add_argument("--repeat", type=int, default=1, help="hard links per image in val/ (scale tests; default 1)")
    return p


def imagenet_task(config: str) -> Any:
    """The ``task`` section of ``config``, checked: a classifier of the 1000 ImageNet classes,
    built by torchvision, whose folders are read by WordNet id (``class_map='imagenet'``)."""
    import torchvision

    from zaqbench.run.runner import REPO_ROOT, config_path, load_config

    path = config_path("cls", None, config, REPO_ROOT / "configs")
    task = load_config(path, {}).get("task") or {}
    model, data = dict(task.get("model") or {}), dict(task.get("data") or {})
    fix = "use an ImageNet config with a torchvision architecture, e.g. configs/cls/mobilenet_v2_imagenet.py"
    if task.get("type") != "cls":
        raise UserError(f"config '{path}' is for task '{task.get('type')}', not ImageNet classification; {fix}")
    arch = model.get("arch")
    if arch not in torchvision.models.list_models(torchvision.models):
        raise UserError(f"task.model.arch={arch!r} in '{path}' is not a torchvision classification model; {fix}")
    if model.get("num_classes") != len(imagenet_aliases()) or data.get("class_map") != "imagenet":
        raise UserError(f"config '{path}' is not an ImageNet config (task.model.num_classes=1000 and "
                        f"task.data.class_map='imagenet'); {fix}")
    return task


def load_model(task: Any, checkpoint: str, trust: bool) -> torch.nn.Module:
    """The config's torchvision model with the checkpoint's weights, in eval mode."""
    import torchvision

    model = torchvision.models.get_model(task.model.arch, weights=None, num_classes=task.model.num_classes,
                                         **dict(task.model.get("kwargs") or {}))
    state = extract_state_dict(load_file(checkpoint, trust=trust), checkpoint)
    problem = describe_key_mismatch(set(model.state_dict()), set(state), checkpoint)
    if problem:
        raise UserError(problem.replace("check --task/--model or the config", "check --config"))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # shapes differ
        lines = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in lines if "size mismatch" in ln), lines[0] if lines else "")
        raise UserError(f"checkpoint '{checkpoint}' does not match '{task.model.arch}': {detail}; "
                        "check --config") from None
    return model.eval()


def write_folder(args: argparse.Namespace) -> Path:
    """Check every argument, then write ``args.out`` whole (or nothing); returns it."""
    from PIL import Image

    for option, value in (("--images", args.images), ("--repeat", args.repeat)):
        if value < 1:
            raise UserError(f"{option} must be a positive integer, got {value}")
    out, what = Path(args.out), "the synthetic ImageFolder"
    check_new_folder(out, what)
    task = imagenet_task(args.config)
    model = load_model(task, args.checkpoint, args.trust_checkpoint)
    data = task.get("data") or {}
    size = int(data.get("image_size", 224))
    tf = eval_transform(size, int(data.get("resize") or round(size / 0.875)),
                        data.get("mean") or IMAGENET_MEAN, data.get("std") or IMAGENET_STD)
    wnids = [sorted(a for a in names if a.startswith("n") and a[1:].isdigit())[0] for names in imagenet_aliases()]
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    with new_folder(out, what) as tmp:
        for i in range(args.images):
            image = Image.fromarray(pattern(i, rng))
            with torch.no_grad():
                idx = int(model(tf(image)[None]).argmax(1))
            for split in ("train", "val"):
                folder = tmp / split / wnids[idx]
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{i:05d}.png")
            for r in range(1, args.repeat):
                os.link(tmp / "val" / wnids[idx] / f"{i:05d}.png", tmp / "val" / wnids[idx] / f"{i:05d}-{r}.png")
            counts[wnids[idx]] = counts.get(wnids[idx], 0) + 1
    print(f"{args.images} images in {len(counts)} classes, x{args.repeat} in val/: {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from zaqbench.run.runner import cli

    args = build_parser().parse_args(argv)

    def work() -> int:
        write_folder(args)
        return 0

    return cli(work, unfinished="image folder")


if __name__ == "__main__":
    raise SystemExit(main())
