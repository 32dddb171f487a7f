"""Every image mode a folder can hold decodes to the 8-bit RGB image it shows."""
import io

import numpy as np
import pytest
from PIL import Image

from tasks.imagefolder import to_rgb

GREY = 128  # the 8-bit grey every test image shows


def grey_image(mode: str) -> Image.Image:
    size = (6, 4)
    if mode == "I;16":
        return Image.fromarray(np.full(size[::-1], GREY * 257, dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(np.full(size[::-1], GREY * 257, dtype=np.int32))
    if mode == "F":
        return Image.fromarray(np.full(size[::-1], GREY / 255, dtype=np.float32))
    base = Image.new("L", size, GREY)
    if mode == "P":
        img = base.convert("P")
        img.info["transparency"] = 0
        return img
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_each_mode_decodes_to_the_grey_it_shows(mode):
    buffer = io.BytesIO()
    fmt = "TIFF" if mode in ("F", "CMYK", "I") else "PNG"
    grey_image(mode).save(buffer, format=fmt)
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        assert img.mode.split(";")[0] == mode.split(";")[0]  # the file really holds that mode
        rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (4, 6, 3)
    assert np.abs(rgb.astype(int) - GREY).max() <= 2, (mode, rgb[0, 0])  # not clipped to white


def test_bilevel_images_are_black_and_white():
    img = Image.new("1", (4, 4), 1)
    assert np.asarray(to_rgb(img)).min() == 255


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (8, 4), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as stored:
        assert stored.size == (8, 4)
        assert to_rgb(stored).size == (4, 8)


def test_a_class_map_file_is_part_of_the_data_identity(tmp_path):
    import json

    import torch

    import tasks  # noqa: F401 - registers the adapters
    from tests.colour_model import WNIDS, make_imagefolder
    from tests.conftest import tiny_cls_config
    from zaqbench.registry import build_task

    root = make_imagefolder(tmp_path / "imgs")
    mapping = tmp_path / "classes.json"

    def identity(order):
        mapping.write_text(json.dumps({w: i for i, w in zip(order, WNIDS)}))
        cfg = tiny_cls_config(model=dict(arch="colour_net", num_classes=3, in_channels=3),
                              data=dict(image_size=16, class_map=str(mapping)), features=None)
        return build_task("cls", cfg=cfg, model_name="m", data_root=str(root), cache_dir=tmp_path / "cache",
                          device=torch.device("cpu")).data_identity()

    first, same, edited = identity([0, 1, 2]), identity([0, 1, 2]), identity([2, 1, 0])
    assert first == same and first["class_map"] != edited["class_map"]  # same path, other labels
    assert first["fingerprint"] == edited["fingerprint"]  # the images did not change
