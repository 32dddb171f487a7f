"""The Fashion-MNIST scene builder: deterministic, boxes that frame the item pixels,
files that stock COCO / mmseg readers accept."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.fashion_mnist import CLASSES
from tasks.scenes import (SceneSpec, build_scenes, compose_scene, ensure_scenes, generate_scenes,
                          scenes_key)
from zaqbench.errors import UserError

pytestmark = pytest.mark.usefixtures("tiny_fashion_mnist_env")

SMALL = SceneSpec(size=64, min_scale=12, max_scale=28)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return build_scenes(tmp_path_factory.mktemp("coco"), "coco", 12, 6, seed=0, spec=SMALL)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, coco_root):
    again = build_scenes(tmp_path / "again", "coco", 12, 6, seed=0, spec=SMALL)
    other = build_scenes(tmp_path / "other", "coco", 12, 6, seed=1, spec=SMALL)
    assert _digest(again) == _digest(coco_root)
    assert _digest(other) != _digest(coco_root)


def test_val_scenes_do_not_depend_on_train_count(tmp_path):
    a = build_scenes(tmp_path / "a", "coco", 3, 4, seed=0, spec=SMALL)
    b = build_scenes(tmp_path / "b", "coco", 7, 4, seed=0, spec=SMALL)
    assert (a / "annotations/instances_val.json").read_bytes() == (b / "annotations/instances_val.json").read_bytes()


def test_coco_file_loads_in_pycocotools_with_boxes_on_the_items(coco_root):
    COCO = pytest.importorskip("pycocotools.coco").COCO
    coco = COCO(str(coco_root / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == 12
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(coco_root / "images" / "train" / img["file_name"]))
        assert pixels.shape == (64, 64, 3) and (pixels[..., 0] == pixels[..., 2]).all()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert 1 <= len(anns) <= 4
        covered = np.zeros((64, 64), bool)
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
            inside = pixels[y:y + h, x:x + w, 0] > SMALL.threshold
            # tight: every border row and column of the box touches an object pixel
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert 0 < ann["area"] <= w * h
            covered[y:y + h, x:x + w] = True
        # every object pixel of the image belongs to some box
        assert not (pixels[..., 0] > SMALL.threshold)[~covered].any()


def test_mmseg_labels_match_the_item_pixels(tmp_path):
    root = build_scenes(tmp_path, "mmseg", 4, 2, seed=0, spec=SMALL)
    for split, n in (("train", 4), ("val", 2)):
        names = sorted(p.name for p in (root / "ann_dir" / split).iterdir())
        assert names == [f"{i:06d}.png" for i in range(n)]
        for name in names:
            label = Image.open(root / "ann_dir" / split / name)
            image = np.asarray(Image.open(root / "img_dir" / split / name))[..., 0]
            assert label.mode == "L"
            label = np.asarray(label)
            assert label.max() <= len(CLASSES)
            np.testing.assert_array_equal(label > 0, image > SMALL.threshold)


def test_occlusion_keeps_items_mostly_visible():
    items = np.full((5, 28, 28), 200, np.uint8)  # solid squares: overlaps are exact
    rng = np.random.default_rng(0)
    spec = SceneSpec(size=64, min_items=4, max_items=4, min_scale=24, max_scale=28)
    for _ in range(20):
        scene = compose_scene(rng, items, np.arange(5), spec)
        for inst in scene.instances:
            x0, y0, x1, y1 = inst.box
            assert inst.mask[y0:y1, x0:x1].any() and inst.area >= spec.min_visible * 24 * 24


def test_ensure_scenes_builds_once_and_reuses(tmp_path):
    first = ensure_scenes(tmp_path, "coco", 2, 2, seed=0, spec=SMALL)
    stamp = (first / "scenes.json").stat().st_mtime_ns
    again = ensure_scenes(tmp_path, "coco", 2, 2, seed=0, spec=SMALL)
    assert again == first and (again / "scenes.json").stat().st_mtime_ns == stamp
    assert first.name.endswith(scenes_key("coco", 2, 2, 0, SMALL))
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [first.name]  # no temp folder left


def test_interrupted_build_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    import tasks.scenes as scenes

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(scenes.WRITERS, "coco", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_scenes(tmp_path, "coco", 2, 2, seed=0, spec=SMALL)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


@pytest.mark.parametrize("kwargs, match", [
    (dict(fmt="voc"), "unknown scene format"),
    (dict(spec=SceneSpec(size=66)), "multiple of 4"),
    (dict(spec=SceneSpec(min_items=3, max_items=2)), "min_items"),
    (dict(spec=SceneSpec(size=64, max_scale=80)), "scale"),
    (dict(num_val=0), "at least 1"),
])
def test_bad_settings_raise_user_error(tmp_path, kwargs, match):
    args = dict(fmt="coco", num_train=2, num_val=2, seed=0, spec=SMALL)
    args.update(kwargs)
    with pytest.raises(UserError, match=match):
        build_scenes(tmp_path, **args)


def test_unknown_split_raises_user_error():
    with pytest.raises(UserError, match="unknown scene split"):
        next(generate_scenes(1, "test", 0))


def test_scenes_json_records_the_settings(coco_root):
    meta = json.loads((coco_root / "scenes.json").read_text())
    assert meta["spec"]["size"] == 64 and meta["num_train"] == 12 and meta["classes"] == list(CLASSES)
