"""The label PNGs of a segmentation dataset, checked before any work.

mmseg would otherwise fail deep inside a loader worker (a missing file), silently train on
garbage (an RGB mask read as three channels), or silently drop pixels from IoU
(``torch.histc`` ignores labels outside the class range).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zaqbench.errors import UserError

#: label-PNG modes mmseg's ``LoadAnnotations`` reads as one class index per pixel
LABEL_MODES = ("L", "P")


def check_annotations(dataset: Any, num_classes: int) -> None:
    """Raise a one-line ``UserError`` for the first missing or malformed label PNG. Labels must be
    class indices, or ``ignore_index`` (255)."""
    from PIL import Image

    if len(dataset) == 0:
        raise UserError(f"no images found for {type(dataset).__name__} under '{dataset.data_root}' "
                        f"(data_prefix {dict(dataset.data_prefix)}); check --data-root")
    top = num_classes if dataset.reduce_zero_label else num_classes - 1
    check_range = not dataset.label_map  # remapped subsets: raw ids belong to the full class list
    for i in range(len(dataset)):
        path = Path(dataset.get_data_info(i)["seg_map_path"])
        if not path.is_file():
            raise UserError(f"annotation '{path}' is missing: every image needs a label PNG of the "
                            "same name in the annotation folder")
        try:
            with Image.open(path) as im:
                mode = im.mode
                labels = np.asarray(im) if mode in LABEL_MODES and check_range else None
        except OSError as err:
            raise UserError(f"annotation '{path}' cannot be read as an image: {err}") from None
        if mode not in LABEL_MODES:
            raise UserError(f"annotation '{path}' has PNG mode '{mode}'; label maps must be single-channel "
                            "8-bit class indices (mode 'L' or 'P')")
        if labels is not None and int(labels.max()) > top:
            values = np.unique(labels)
            bad = values[(values > top) & (values != dataset.ignore_index)]
            if bad.size:
                raise UserError(f"annotation '{path}' has label(s) {bad.tolist()[:5]} outside the "
                                f"{num_classes} classes (valid: 0..{top}, or {dataset.ignore_index} = ignore)")
