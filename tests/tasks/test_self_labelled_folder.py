"""tools/self_labelled_imagefolder.py (``tasks.self_labelled_folder``): the folder it writes, and
every misuse as one ``error:`` line, exit status 2 and no folder written.

A random-weight SqueezeNet 1.1 at 64 px keeps each case to about a second.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from tasks.self_labelled_folder import main
from tests.conftest import ROOT

CONFIG = """task = dict(type='cls', model=dict(arch='squeezenet1_1', num_classes=1000, in_channels=3),
            data=dict(image_size=64, class_map='imagenet'))
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny ImageNet config, its weights, and the same weights in a file that needs unpickling."""
    folder = tmp_path_factory.mktemp("self_labelled")
    torch.manual_seed(0)
    state = torchvision.models.squeezenet1_1(num_classes=1000).state_dict()
    files = {"config": folder / "tiny_imagenet.py", "weights": folder / "weights.pth",
             "pickled": folder / "pickled.pth"}
    files["config"].write_text(CONFIG)
    torch.save(state, files["weights"])
    torch.save({"state_dict": state, "meta": {"args": argparse.Namespace(lr=0.1)}}, files["pickled"])
    return files


def run(model_files, out: Path, *extra: str, config: str | None = None, checkpoint: str | None = None) -> int:
    return main(["--config", config or str(model_files["config"]),
                 "--checkpoint", checkpoint or str(model_files["weights"]), "--out", str(out), *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_writes_each_image_under_the_class_the_model_predicts(model_files, tmp_path):
    out = tmp_path / "imgs"
    assert run(model_files, out, "--images", "3", "--repeat", "2") == 0
    train, val = list((out / "train").rglob("*.png")), list((out / "val").rglob("*.png"))
    assert sorted(p.name for p in train) == ["00000.png", "00001.png", "00002.png"]
    assert len(val) == 6 and all(p.parent.name.startswith("n") for p in val)  # WordNet-id folders
    first = next(p for p in val if p.name == "00000.png")
    assert os.path.samefile(first, first.with_name("00000-1.png"))  # --repeat: hard links
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]  # no temporary folder left beside it


def test_the_trust_flag_loads_a_checkpoint_that_needs_unpickling(model_files, tmp_path, capsys):
    pickled = str(model_files["pickled"])
    assert run(model_files, tmp_path / "refused", checkpoint=pickled) == 2
    assert "--trust-checkpoint" in one_error_line(capsys)
    assert not (tmp_path / "refused").exists()
    assert run(model_files, tmp_path / "trusted", "--images", "1", "--trust-checkpoint", checkpoint=pickled) == 0
    assert len(list((tmp_path / "trusted" / "val").rglob("*.png"))) == 1


def test_a_rerun_into_the_same_folder_is_refused_and_changes_nothing(model_files, tmp_path, capsys):
    out = tmp_path / "imgs"
    assert run(model_files, out, "--images", "2") == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert run(model_files, out, "--images", "2", "--repeat", "2") == 2
    assert "already holds files" in one_error_line(capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


BAD = {
    "no images": (["--images", "0"], "--images must be a positive integer"),
    "negative images": (["--images", "-3"], "--images must be a positive integer"),
    "no repeat": (["--repeat", "0"], "--repeat must be a positive integer"),
    "a missing checkpoint": (["CHECKPOINT", "missing.pth"], "does not exist"),
    "a checkpoint of another model": (["CHECKPOINT", "other.pth"], "does not match"),
    "a config that is not torchvision's": (["CONFIG", str(ROOT / "configs" / "cls" / "resnet20.py")],
                                           "not a torchvision classification model"),
    "a config of another task": (["CONFIG", "seg.py"], "is for task 'seg'"),
    "a config that is not ImageNet's": (["CONFIG", "ten.py"], "not an ImageNet config"),
    "a missing config": (["CONFIG", "nope.py"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(model_files, tmp_path, capsys, case):
    extra, needle = BAD[case]
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    (tmp_path / "seg.py").write_text("task = dict(type='seg')\n")
    (tmp_path / "ten.py").write_text(CONFIG.replace("1000", "10"))
    config = checkpoint = None
    if extra[0] in ("CONFIG", "CHECKPOINT"):
        path = extra[1] if extra[1].startswith("/") else str(tmp_path / extra[1])
        config, checkpoint = (path, None) if extra[0] == "CONFIG" else (None, path)
        extra = []
    assert run(model_files, tmp_path / "imgs", *extra, config=config, checkpoint=checkpoint) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "imgs").exists()


def test_an_out_that_is_a_file_is_one_line(model_files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert run(model_files, out) == 2
        assert "not a directory" in one_error_line(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_is_one_line(model_files, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert run(model_files, locked / "imgs") == 2
    assert "not writable" in one_error_line(capsys)


@pytest.mark.subprocess
def test_the_tool_gives_one_line_and_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "self_labelled_imagefolder.py"), "--config",
                           str(ROOT / "configs" / "cls" / "mobilenet_v2_imagenet.py"), "--checkpoint",
                           str(tmp_path / "missing.pth"), "--out", str(tmp_path / "imgs"), "--images", "0"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stderr.startswith("error: --images") and "Traceback" not in proc.stderr
