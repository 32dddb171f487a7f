"""Write scikit-image's sample photos as a tiny ImageNet-style folder of real photos.

``<out>/val/<wnid>/<photo>-<view>.png``: three photos whose ImageNet class is unambiguous, each
as six real views (whole, mirrored, four 80 % corner crops), 18 images in WordNet-id folders. It
is the only real-photo set on a machine without internet; it checks a real ImageNet model end
to end (class map, 256/224 transform, agreement with FP), not ImageNet accuracy.

    python tools/photo_imagefolder.py --out /tmp/photos      (a new or empty folder)

Every view's label is the class the full-precision model predicts, so runs on this folder take
``--cfg-options task.eval.self_labelled=True``: rows then carry top-5 agreement, the KL divergence
from FP and top-1 on the views where FP is confident beside top-1 (``tasks/agreement.py``).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageOps

from zaqbench.errors import UserError

from .imagefolder import check_new_folder, new_folder

# Photo -> the WordNet id of what it shows; how the photos were chosen and checked against
# torchvision's ImageNet MobileNetV2: docs/findings/imagenet_check.md.
PHOTO_CLASSES = {
    "chelsea.png": "n02124075",  # Egyptian cat
    "coffee.png": "n07920052",  # espresso
    "camera.png": "n04485082",  # tripod
}


def views(image: Image.Image) -> dict[str, Image.Image]:
    """The photo, its mirror image and its four 80 % corner crops: six real views per photo."""
    w, h = image.size
    cw, ch = int(w * 0.8), int(h * 0.8)
    return {"full": image, "mirror": ImageOps.mirror(image),
            **{name: image.crop(box) for name, box in (("tl", (0, 0, cw, ch)), ("tr", (w - cw, 0, w, ch)),
                                                       ("bl", (0, h - ch, cw, h)),
                                                       ("br", (w - cw, h - ch, w, h)))}}


def skimage_photos() -> Path | None:
    """Folder of scikit-image's bundled photos, or None if scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    return Path(spec.submodule_search_locations[0]) / "data" if spec else None


def photo_folder(root: Path) -> Path:
    """Write ``root/val/<wnid>/<photo>-<view>.png`` (``root`` new or empty, written whole or not at
    all) and return ``root``."""
    check_new_folder(root, "the photo folder")
    photos = skimage_photos()
    if photos is None:
        raise UserError("scikit-image is not installed; `make test` (the test extra) installs it")
    with new_folder(root, "the photo folder") as tmp:
        for name, wnid in PHOTO_CLASSES.items():
            folder = tmp / "val" / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for view, image in views(Image.open(photos / name).convert("RGB")).items():
                image.save(folder / f"{Path(name).stem}-{view}.png")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    from zaqbench.run.runner import OneLineParser, cli

    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a new or empty folder to write (val/<wnid>/*.png)")
    args = p.parse_args(argv)

    def work() -> int:
        root = photo_folder(Path(args.out))
        print(f"wrote {sum(1 for _ in root.rglob('*.png'))} photos to {root}/val", file=sys.stderr)
        return 0

    return cli(work, unfinished="photo folder")
