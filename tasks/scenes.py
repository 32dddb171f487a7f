"""Scenes of real Fashion-MNIST items: the embedded data of detection and segmentation.

One deterministic composer places 1-4 real Fashion-MNIST items (random scale and
position) on a black canvas; two writers store the same scenes as a COCO
detection dataset (``write_coco``) or an mmseg semantic-segmentation dataset
(``write_mmseg``), so each task reads them through its ecosystem's own stock
dataset class, and a user's real COCO / mmseg data works by changing
``--data-root``.

Train scenes take items from the Fashion-MNIST *train* split, val scenes from
the *test* split, so the val score measures generalisation to unseen items.
Everything is driven by one seeded ``numpy.random.Generator`` per split:
the same seed gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from zaqbench.errors import UserError

from .fashion_mnist import CLASSES, load_fashion_mnist
from .mm_config import check_input_size

#: bump when the composition or the file layout changes, so caches are rebuilt
SCENES_VERSION = 1
FORMATS = ("coco", "mmseg")
SPLITS = {"train": "train", "val": "test"}  # scene split -> Fashion-MNIST split


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are composed.

    ``threshold`` decides which item pixels count as the object (for boxes and
    masks): the faint halo that resizing leaves around an item is not object.
    ``min_visible`` rejects a placement that would hide more than half of an
    earlier item's object pixels, so every box still frames a recognisable item.
    """

    size: int = 128
    min_items: int = 1
    max_items: int = 4
    min_scale: int = 20
    max_scale: int = 56
    threshold: int = 40
    min_visible: float = 0.5
    max_tries: int = 20

    def check(self) -> None:
        check_input_size((self.size, self.size), "scene size (task.data.spec.size)")
        if not 1 <= self.min_items <= self.max_items:
            raise UserError(f"scene items: need 1 <= min_items <= max_items, got {self.min_items}..{self.max_items}")
        if not 4 <= self.min_scale <= self.max_scale <= self.size:
            raise UserError(f"scene item scale {self.min_scale}..{self.max_scale} px must lie in 4..{self.size}")
        if not 0 <= self.threshold < 255:
            raise UserError(f"scene threshold must be in 0..254, got {self.threshold}")


@dataclass
class Instance:
    """One visible item: class index (0-9), box ``[x0, y0, x1, y1)`` in pixels, mask."""

    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray  # (H, W) bool, visible object pixels

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Scene:
    image: np.ndarray  # (H, W) uint8, gray
    instances: list[Instance]

    def semantic_mask(self) -> np.ndarray:
        """(H, W) uint8: class index + 1 on object pixels, 0 on background."""
        seg = np.zeros(self.image.shape, np.uint8)
        for inst in self.instances:
            seg[inst.mask] = inst.label + 1
        return seg

    def rgb(self) -> np.ndarray:
        """Gray replicated to 3 channels, so stock RGB pipelines work unchanged."""
        return np.repeat(self.image[:, :, None], 3, axis=2)


# -- composition ---------------------------------------------------------------
def _resize(item: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(item).resize((size, size), Image.BILINEAR))


def _paste(canvas: np.ndarray, owner: np.ndarray, item: np.ndarray, x: int, y: int, k: int) -> None:
    """Draw ``item`` on top: its non-zero pixels cover what is below (occlusion)."""
    h, w = item.shape
    cover = item > 0
    canvas[y:y + h, x:x + w][cover] = item[cover]
    owner[y:y + h, x:x + w][cover] = k


def _visible_fraction(canvas: np.ndarray, owner: np.ndarray, full: list[int], threshold: int) -> list[float]:
    """Share of each placed item's object pixels still visible."""
    obj = canvas > threshold
    return [float(((owner == k) & obj).sum()) / max(n, 1) for k, n in enumerate(full)]


def compose_scene(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray,
                  spec: SceneSpec = SceneSpec()) -> Scene:
    """One scene from a pool of 28x28 items; all randomness comes from ``rng``."""
    s = spec.size
    canvas = np.zeros((s, s), np.uint8)
    owner = np.full((s, s), -1, np.int16)
    placed: list[int] = []  # pool index of each placed item
    full: list[int] = []  # object pixels of each placed item when unoccluded
    for _ in range(int(rng.integers(spec.min_items, spec.max_items + 1))):
        idx = int(rng.integers(len(items)))
        for _ in range(spec.max_tries):
            scale = int(rng.integers(spec.min_scale, spec.max_scale + 1))
            item = _resize(items[idx], scale)
            x, y = (int(v) for v in rng.integers(0, s - scale + 1, size=2))
            trial_canvas, trial_owner = canvas.copy(), owner.copy()
            _paste(trial_canvas, trial_owner, item, x, y, len(placed))
            n_obj = int((item > spec.threshold).sum())
            vis = _visible_fraction(trial_canvas, trial_owner, full + [n_obj], spec.threshold)
            if n_obj > 0 and min(vis) >= spec.min_visible:
                canvas, owner = trial_canvas, trial_owner
                placed.append(idx)
                full.append(n_obj)
                break
    return Scene(canvas, _instances(canvas, owner, [int(labels[i]) for i in placed], spec.threshold))


def _instances(canvas: np.ndarray, owner: np.ndarray, labels: list[int], threshold: int) -> list[Instance]:
    obj = canvas > threshold
    out = []
    for k, label in enumerate(labels):
        mask = (owner == k) & obj
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append(Instance(label, box, mask))
    return out


def generate_scenes(num: int, split: str, seed: int, spec: SceneSpec = SceneSpec(),
                    data_root: str | None = None) -> Iterator[Scene]:
    """``num`` scenes of ``split`` ('train' or 'val'), reproducible from ``seed``."""
    if split not in SPLITS:
        raise UserError(f"unknown scene split '{split}'; valid splits: {', '.join(SPLITS)}")
    if num < 1:
        raise UserError(f"number of {split} scenes must be at least 1, got {num}")
    spec.check()
    items, labels = load_fashion_mnist(SPLITS[split], data_root)
    # one independent stream per split: the val set does not shift when num_train changes
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    for _ in range(num):
        yield compose_scene(rng, items, labels, spec)


# -- writers -----------------------------------------------------------------------
def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False)


def coco_categories() -> list[dict]:
    return [{"id": k + 1, "name": name, "supercategory": "fashion"} for k, name in enumerate(CLASSES)]


def write_coco(scenes: Iterable[Scene], root: Path, split: str) -> Path:
    """COCO detection layout: ``images/<split>/*.png`` + ``annotations/instances_<split>.json``.

    Category ids are 1..10 in Fashion-MNIST order; boxes are ``[x, y, w, h]``
    of the visible object pixels; ``area`` is the visible pixel count.
    """
    root = Path(root)
    img_dir = root / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, scene in enumerate(scenes):
        name = f"{i:06d}.png"
        _save_png(scene.rgb(), img_dir / name)
        h, w = scene.image.shape
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": inst.label + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": inst.area, "iscrowd": 0,
            })
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    coco = {"info": {"description": f"zaqbench Fashion-MNIST scenes ({split})", "version": SCENES_VERSION},
            "images": images, "annotations": annotations, "categories": coco_categories()}
    ann_file.write_text(json.dumps(coco))
    return ann_file


def write_mmseg(scenes: Iterable[Scene], root: Path, split: str) -> Path:
    """mmseg layout: ``img_dir/<split>/*.png`` + ``ann_dir/<split>/*.png`` (8-bit 'L' labels,
    0 = background, k + 1 = Fashion-MNIST class k)."""
    root = Path(root)
    img_dir, ann_dir = root / "img_dir" / split, root / "ann_dir" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        name = f"{i:06d}.png"
        _save_png(scene.rgb(), img_dir / name)
        _save_png(scene.semantic_mask(), ann_dir / name)
    return ann_dir


WRITERS = {"coco": write_coco, "mmseg": write_mmseg}


# -- the cache -------------------------------------------------------------------
def scenes_key(fmt: str, num_train: int, num_val: int, seed: int, spec: SceneSpec) -> str:
    """Short hash of everything the files depend on (names the cache folder)."""
    blob = json.dumps({"fmt": fmt, "train": num_train, "val": num_val, "seed": seed,
                       "spec": asdict(spec), "version": SCENES_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_scenes(root: Path, fmt: str, num_train: int, num_val: int, seed: int,
                 spec: SceneSpec = SceneSpec(), data_root: str | None = None) -> Path:
    """Write both splits into ``root`` (no caching; see ``ensure_scenes``)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown scene format '{fmt}'; valid formats: {', '.join(FORMATS)}")
    root = Path(root)
    for split, num in (("train", num_train), ("val", num_val)):
        WRITERS[fmt](generate_scenes(num, split, seed, spec, data_root), root, split)
    meta = {"format": fmt, "num_train": num_train, "num_val": num_val, "seed": seed,
            "spec": asdict(spec), "classes": list(CLASSES), "version": SCENES_VERSION}
    (root / "scenes.json").write_text(json.dumps(meta, indent=1))
    return root


def ensure_scenes(cache_dir: Path, fmt: str, num_train: int = 4000, num_val: int = 1000, seed: int = 0,
                  spec: SceneSpec = SceneSpec(), data_root: str | None = None) -> Path:
    """The dataset root for these settings, built once into ``cache_dir`` and reused.

    The build goes into a temporary sibling folder that is renamed into place
    only when complete, so an interrupted build is never mistaken for a dataset;
    a file lock keeps two concurrent runs from building the same scenes twice.
    """
    from filelock import FileLock

    if fmt not in FORMATS:
        raise UserError(f"unknown scene format '{fmt}'; valid formats: {', '.join(FORMATS)}")
    cache_dir = Path(cache_dir)
    final = cache_dir / f"scenes-{fmt}-{scenes_key(fmt, num_train, num_val, seed, spec)}"
    if final.is_dir():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():  # built by another process while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache_dir))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
        try:
            build_scenes(tmp, fmt, num_train, num_val, seed, spec, data_root)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
