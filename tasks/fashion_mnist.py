"""Fashion-MNIST, the real images behind every embedded default.

Looked up in this order: ``--data-root``, ``$ZAQBENCH_DATA``, the Debian
package ``dataset-fashion-mnist``, torchvision's download (machines with
internet only). The IDX ``.gz`` files are read with numpy.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from zaqbench.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
HOW_TO_GET = ("install the Debian package 'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist), "
              "or point --data-root / $ZAQBENCH_DATA at a folder holding the four Fashion-MNIST IDX .gz files")


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for pair in _FILES.values() for f in pair)


def _candidates(root: str | None) -> list[Path]:
    """An explicit root (``--data-root``, else ``$ZAQBENCH_DATA``) is the only place looked at:
    a wrong path is an error, not a silent fallback to other data."""
    if root:
        root = Path(root)
        return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    return [DEBIAN_DIR]


def find_fashion_mnist(data_root: str | None = None, download_dir: Path | None = None) -> Path:
    """Folder holding the four IDX files; raises a one-line ``UserError`` if none."""
    explicit = data_root or os.environ.get("ZAQBENCH_DATA")
    for folder in _candidates(explicit):
        if _has_files(folder):
            return folder
    if download_dir is not None and not explicit:
        try:  # only works on machines with internet
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(download_dir), train=True, download=True)
            FashionMNIST(str(download_dir), train=False, download=True)
            folder = Path(download_dir) / "FashionMNIST" / "raw"
            if _has_files(folder):
                return folder
        except Exception:  # noqa: BLE001 - any failure means "not available"
            pass
    where = f"'{data_root}'" if data_root else "$ZAQBENCH_DATA or /usr/share/datasets/fashion-mnist"
    raise UserError(f"Fashion-MNIST not found in {where}; {HOW_TO_GET}")


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path}: {err}; {HOW_TO_GET}") from None
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise UserError(f"{path} is not an IDX uint8 file; {HOW_TO_GET}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated; {HOW_TO_GET}")
    return body.reshape(dims)


def load_fashion_mnist(split: str, data_root: str | None = None,
                       download_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of ``split`` ('train' or 'test')."""
    folder = find_fashion_mnist(data_root, download_dir)
    images_file, labels_file = _FILES[split]
    images = _read_idx(folder / images_file)
    labels = _read_idx(folder / labels_file).astype(np.int64)
    if len(images) != len(labels):
        raise UserError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels in {folder}")
    return images, labels
