"""ImageFolder data (``<root>/{train,val}/<class>/<image>``), streamed, never held in memory.

A split is scanned once (file names only), each folder mapped onto the model's
class index (``tasks/class_map.py``), and images are decoded batch by batch in
DataLoader workers with torchvision's evaluation transform: resize the short
side to ``resize`` (``image_size / 0.875``, i.e. 256 for 224), centre-crop
``image_size``, normalise. Peak memory is one batch per worker, whatever the
number of images. ``new_folder`` is where the tools that write such folders (real photos,
self-labelled patterns) put them, whole or not at all.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from zaqbench.errors import UserError

from .class_map import map_folders

#: torchvision's own list of image suffixes (ImageFolder's IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderSplit:
    """The files of one split: (path, model class index) pairs in folder order."""

    root: Path
    samples: list[tuple[str, int]]
    folders: dict[str, int]
    skipped: list[str]

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]


def scan_split(folder: Path, class_map: str | None, num_classes: int) -> FolderSplit:
    """List the images of ``folder``/<class>/ (sub-folders included) and map each class folder
    onto the model's index. Non-image files are skipped and counted; no image left is an error."""
    if not folder.is_dir():
        raise UserError(f"ImageFolder data needs the folder '{folder}'; lay out <data-root>/{{train,val}}/<class>/*")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    mapping = map_folders(classes, class_map, num_classes, folder)
    samples, skipped = [], []
    for name in classes:
        for path in sorted(p for p in (folder / name).rglob("*") if p.is_file()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((str(path), mapping[name]))
            elif not path.name.startswith("."):
                skipped.append(str(path.relative_to(folder)))
    if not samples:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders of '{folder}'"
                        + (f"; {len(skipped)} other file(s) skipped, e.g. {skipped[0]}" if skipped else ""))
    if skipped:
        print(f"[zaqbench] {folder}: skipped {len(skipped)} non-image file(s), e.g. {skipped[0]}", file=sys.stderr)
    return FolderSplit(folder, samples, mapping, skipped)


def eval_transform(size: int, resize: int, mean: Sequence[float], std: Sequence[float]):
    """torchvision's ImageNet evaluation transform: PIL image -> normalised (3, size, size)."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor(),
                               transforms.Normalize(mean, std)])


def to_rgb(img):
    """An 8-bit RGB image of what the file shows: EXIF orientation applied (as a viewer shows a
    rotated photo), 16-bit, 32-bit integer and float greyscale scaled to 8 bits (PIL's own
    ``convert`` clips them at 255, turning a 16-bit photo all white), palette, CMYK and bilevel
    images converted as PIL does, an alpha channel dropped as torchvision's loader drops it."""
    import numpy as np
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0  # floats in [0, 1]
        elif img.mode != "F" and values.size and values.max() > 255:
            values = values / (65535.0 if values.max() <= 65535 else values.max()) * 255.0  # 16-bit (or wider)
        img = Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8))
    return img.convert("RGB")


class ImageFiles(Dataset):
    """(image, label) pairs decoded on demand; a file that cannot be decoded is a ``UserError``."""

    def __init__(self, split: FolderSplit, transform) -> None:
        self.samples, self.transform = split.samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                image = to_rgb(img)
        except Image.DecompressionBombError as err:  # a header declaring billions of pixels
            raise UserError(f"image '{path}' is too large to decode safely ({err}); remove or resize it") from None
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for truncated / foreign files
            raise UserError(f"cannot decode image '{path}' ({err}); remove or replace the file") from None
        return self.transform(image), label


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` indices drawn class by class in turn (seeded shuffle within each class), so every class
    gets n // K or n // K + 1 images; returned in file order."""
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    queues = [[idx[j] for j in torch.randperm(len(idx), generator=g).tolist()] for _, idx in sorted(by_class.items())]
    picked: list[int] = []
    depth = 0
    while len(picked) < min(n, len(labels)):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth])
        depth += 1
    return sorted(picked)


def loader(dataset: Dataset, indices: Sequence[int] | None, batch_size: int, workers: int,
           shuffle_seed: int | None = None) -> DataLoader:
    """Batches of ``dataset`` (restricted to ``indices``) decoded by ``workers`` processes."""
    data = Subset(dataset, list(indices)) if indices is not None else dataset
    g = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=g is not None, generator=g,
                      persistent_workers=False)


def stream(batches: DataLoader) -> Iterator:
    """Iterate a DataLoader; a ``UserError`` raised in a worker comes back as the same one line
    (the DataLoader re-raises it with the worker's traceback in the message)."""
    try:
        yield from batches
    except UserError as err:
        last = str(err).strip().splitlines()[-1]
        raise UserError(last.split("UserError: ", 1)[-1]) from None


def check_new_folder(out: Path, what: str) -> None:
    """``out`` (a tool's ``--out``) is a new or empty folder that can be created: one line if not."""
    from zaqbench.run.runner import check_output_folder

    check_output_folder(out, "--out", what)
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out '{out}' already holds files; give a new or empty folder (or delete this one): "
                        "images of an earlier run would mix with the new ones")


@contextmanager
def new_folder(out: Path, what: str) -> Iterator[Path]:
    """A temporary folder beside ``out`` (the ``--out`` of a tool that writes image folders) to
    write into; it becomes ``out`` when the block ends, and is removed if the block fails.

    ``out`` must be new or empty, checked before any work: files already there would mix with the
    new ones (an image left in another class folder by an earlier run is a wrong label).
    """
    out = Path(out)
    check_new_folder(out, what)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # the user's umask, as ``out`` itself would get
    except OSError as err:
        raise UserError(f"cannot write --out '{out}' ({err.strerror or err}); choose another folder") from None
    try:
        yield tmp
        os.replace(tmp, out)  # an empty ``out`` is replaced as a whole
    except OSError as err:  # e.g. a full disk
        raise UserError(f"cannot write --out '{out}' ({err.strerror or err}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
