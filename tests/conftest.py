"""Shared fixtures: tiny, seeded, network-free data and models."""
from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(folder: Path, n_train: int = 96, n_test: int = 48, seed: int = 0) -> Path:
    """Tiny Fashion-MNIST look-alike: class k is a bright square at a class-specific place,
    so a small model can learn it in a few steps."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            images[i, 4 + 12 * r: 12 + 12 * r, 2 + 5 * c: 6 + 5 * c] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def tiny_fashion_mnist_env(fmnist_root):
    """``ZAQBENCH_DATA`` pointing at the tiny Fashion-MNIST look-alike for one module (scene items,
    embedded defaults): no install needed. Modules opt in with ``pytest.mark.usefixtures``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZAQBENCH_DATA", str(fmnist_root))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny tensors run fastest on one thread, and tests never oversubscribe the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


def tiny_cls_config(**task_overrides):
    from mmengine.config import Config

    task = dict(type="cls", model=dict(arch="resnet20", num_classes=10, in_channels=1, width=4),
                data=dict(image_size=16), features=["layer1", "layer2", "layer3"],
                teacher=dict(epochs=1, batch_size=32, lr=0.05), eval=dict(batch_size=64))
    task.update(task_overrides)
    return Config(dict(task=task, quant=dict(preset="default")))


@pytest.fixture
def cls_adapter(fmnist_root, tmp_path):
    import tasks  # noqa: F401 - registers adapters
    from zaqbench.registry import build_task

    return build_task("cls", cfg=tiny_cls_config(), model_name="tiny", data_root=str(fmnist_root),
                      cache_dir=tmp_path / "cache", device=torch.device("cpu"))


def run_task_cli(tmp_path: Path, config: Path, *extra: str):
    """``tools/run_task.py --task toy --config <config>`` in a fresh process with its own cache, results
    file and work dir, as a user would run it; returns (completed process, rows of the results CSV)."""
    import csv
    import os
    import subprocess

    out = tmp_path / "toy.csv"
    env = {**os.environ, "ZAQBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_task.py"), "--task", "toy", "--config", str(config),
         "--out", str(out), "--work-dir", str(tmp_path / "work"), "--no-progress", *extra],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    rows = list(csv.DictReader(open(out))) if out.exists() else []
    return proc, rows


#: test files that build mmdet / mmseg models or datasets
MM_FILES = {"test_detection.py", "test_segmentation.py", "test_scenes.py", "test_mm_config.py"}
#: what in a test's source means it starts a child process
CHILD_PROCESS = ("subprocess", "run_task_cli", "sys.executable")


def pytest_collection_modifyitems(config, items) -> None:
    """The ``mm`` and ``subprocess`` markers, read off each test (its file, its source), so a new
    test gets them without remembering to; ``slow`` is declared on the test itself."""
    import inspect

    for item in items:
        if Path(str(item.fspath)).name in MM_FILES:
            item.add_marker(pytest.mark.mm)
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        if any(word in source for word in CHILD_PROCESS):
            item.add_marker(pytest.mark.subprocess)


def result_row(**columns):
    """A results-CSV row with every column of the schema; ``columns`` override the defaults."""
    from zaqbench.run.results import COLUMNS

    row = {c: "x" for c in COLUMNS}
    row.update(task="cls", model="m", dataset="d", method="ptq", wbits=4, abits=4, metric="top1", value=45.0,
               fp_value=90.0, iters=0, seed=0, seconds=1.0, commit="abc", date="2026-11-27T00:00:00+00:00",
               device="cpu", extra_metrics="")
    row.update(columns)
    return row
