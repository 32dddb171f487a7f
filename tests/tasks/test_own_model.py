"""Users' own models and data through tools/run_task.py: a registered model via custom_imports,
an ImageFolder mapped onto ImageNet indices, and every damaged data layout as one line."""
import csv
import gzip
from pathlib import Path

import pytest
import torch

import tasks  # noqa: F401
from tests.colour_model import WNIDS, colour_net, make_imagefolder
from tests.run.test_runner import TINY, expect_error
from zaqbench.run.runner import main

COLOUR_CONFIG = """
custom_imports = dict(imports=['tests.colour_model'], allow_failed_imports=False)
task = dict(type='cls', model=dict(arch='colour_net', num_classes=1000, in_channels=3),
            data=dict(image_size=16, class_map={class_map!r}), eval=dict(batch_size=6, workers=1))
quant = dict(preset='default', first_fp=False)  # two layers: the conv is quantized, the head stays FP
default_methods = ['fp', 'ptq', 'real-ptq']
methods = dict(ptq=dict(batch_size=4, calib_batches=1), **{{'real-ptq': dict(batch_size=4, calib_batches=2)}})
"""


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def rows(path):
    if not Path(path).exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def colour_run(tmp_path, class_map="imagenet", root=None):
    root = root or make_imagefolder(tmp_path / "imagenet")
    config = tmp_path / "colour.py"
    config.write_text(COLOUR_CONFIG.format(class_map=class_map))
    ckpt = tmp_path / "colour.pth"
    torch.save(colour_net(num_classes=1000, in_channels=3).state_dict(), ckpt)
    return main(["--task", "cls", "--config", str(config), "--checkpoint", str(ckpt), "--data-root", str(root),
                 "--bits", "8", "--out", str(tmp_path / "out.csv"), "--work-dir", str(tmp_path / "work"),
                 "--no-progress"])


def test_imagefolder_with_wordnet_folders_and_a_checkpoint(paths, capsys):
    assert colour_run(paths) == 0
    written = rows(paths / "out.csv")
    assert [(r["method"], r["wbits"], r["model"], r["dataset"].split("@")[0]) for r in written] == [
        ("fp", "32", "colour", "imagenet"), ("ptq", "8", "colour", "imagenet"),
        ("real-ptq", "8", "colour", "imagenet")]
    assert all(r["dataset"].split("@")[1].startswith(str(paths / "imagenet") + "#") for r in written)
    assert float(written[0]["value"]) == 100.0 and float(written[1]["value"]) == 100.0
    err = capsys.readouterr().err
    assert "features (automatic" in err and "mix (16x16)" in err and "warning" not in err
    assert "\r" not in err  # --no-progress: no bar while streaming the folder either


def test_imagefolder_labelled_0_to_k_is_refused_before_any_work(paths, capsys):
    expect_error(capsys, colour_run(paths, class_map=None), "3 class folders but the model has 1000 classes",
                 "task.data.class_map")
    assert not (paths / "out.csv").exists()


def test_fp_at_chance_prints_what_to_check(paths, capsys):
    mapping = paths / "shifted.txt"  # class i of the map is the WordNet id of class i + 1: all labels wrong
    mapping.write_text("\n".join(["n99999999", *WNIDS]))
    assert colour_run(paths, class_map=str(mapping)) == 0
    assert float(rows(paths / "out.csv")[0]["value"]) == 0.0
    warning = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert len(warning) == 1 and "chance level" in warning[0] and "task.data.class_map" in warning[0]


def test_registered_user_model_example(paths, fmnist_root, capsys):
    options = ["task.teacher.epochs=1", "task.teacher.batch_size=32", "task.data.image_size=16",
               "task.model.kwargs.width=4", "methods.ptq.batch_size=8"]
    assert main(["--task", "cls", "--model", "example_custom_model", "--data-root", str(fmnist_root),
                 "--methods", "fp,ptq", "--bits", "8", "--out", str(paths / "out.csv"), "--work-dir",
                 str(paths / "work"), "--no-progress", "--cfg-options", *options]) == 0
    written = rows(paths / "out.csv")
    assert [(r["model"], r["method"]) for r in written] == [("example_custom_model", "fp"),
                                                            ("example_custom_model", "ptq")]
    assert "stem (16x16), stage1 (8x8), stage2 (4x4)" in capsys.readouterr().err


def test_arch_override_is_recorded_in_the_model_column(paths, fmnist_root):
    out = paths / "out.csv"
    assert main(["--task", "cls", "--model", "resnet20", "--data-root", str(fmnist_root), "--methods", "fp",
                 "--out", str(out), "--work-dir", str(paths / "work"), "--no-progress",
                 "--cfg-options", *TINY, "task.model.arch=cifar_resnet8"]) == 0
    assert rows(out)[-1]["model"] == "resnet20(cifar_resnet8)"


def _imagefolder_train_without_classes(root):
    make_imagefolder(root, per_class=1)
    for f in (root / "train").rglob("*.png"):
        f.rename(root / "train" / f"{f.parent.name}.png")
    for d in (root / "train").iterdir():
        if d.is_dir():
            d.rmdir()


def _imagefolder_only_text(root):
    for split in ("train", "val"):
        for w in WNIDS:
            (root / split / w).mkdir(parents=True)
            (root / split / w / "readme.txt").write_text("no images")


def _empty_cifar(root):
    (root / "cifar-10-batches-py").mkdir(parents=True)


def _truncated_cifar(root):
    from torchvision.datasets import CIFAR10

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        (folder / name).write_bytes(b"\x80\x04\x95")  # the first bytes of a pickle, cut off
    (folder / "batches.meta").write_bytes(b"\x80\x04\x95")


def _truncated_fashion_mnist(root):
    from tests.conftest import make_fashion_mnist

    make_fashion_mnist(root)
    path = root / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        data = f.read()
    path.write_bytes(gzip.compress(data)[:200])


@pytest.mark.parametrize("make, needles", [
    (_imagefolder_train_without_classes, ("no class folders", "train")),
    (_imagefolder_only_text, ("no image files", "3 other file(s) skipped")),
    (_empty_cifar, ("cifar-10-batches-py", "lacks 7 of CIFAR-10's 7 files")),
    (_truncated_cifar, ("truncated or corrupt",)),
    (_truncated_fashion_mnist, ("train-images-idx3-ubyte.gz",)),
], ids=["train-without-class-folders", "no-image-files", "empty-cifar", "truncated-cifar",
        "truncated-fashion-mnist"])
def test_damaged_data_is_one_line_and_nothing_written(paths, capsys, make, needles):
    root = paths / "data"
    root.mkdir()
    make(root)
    out = paths / "out.csv"
    code = main(["--task", "cls", "--model", "resnet20", "--data-root", str(root), "--methods", "fp,ptq",
                 "--out", str(out), "--work-dir", str(paths / "work"), "--no-progress", "--cfg-options", *TINY,
                 "task.data.class_map=imagenet", "task.model.num_classes=1000"])
    expect_error(capsys, code, *needles)
    assert not out.exists() and not (paths / "cache" / "teachers").exists()


def test_real_data_method_without_a_train_split_is_refused_before_any_row(paths, capsys):
    import shutil
    root = make_imagefolder(paths / "imagenet")
    shutil.rmtree(root / "train", ignore_errors=True)
    assert colour_run(paths, root=root) == 2
    assert "needs '" in capsys.readouterr().err and not (paths / "out.csv").exists()  # no fp/ptq row first
