"""tools/photo_imagefolder.py (``tasks.photo_folders``): the photo folder, and every misuse as one
``error:`` line, exit status 2 and nothing written."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import tasks.photo_folders as photo_folders
from tasks.photo_folders import main
from tests.conftest import ROOT

needs_photos = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                  reason="needs scikit-image (its sample photos); `make test` installs it")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@needs_photos
def test_writes_the_photos_once_and_refuses_a_second_run_into_the_same_folder(tmp_path, capsys):
    out = tmp_path / "photos"
    assert main(["--out", str(out)]) == 0
    written = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert len(written) == 18 and [p.name for p in tmp_path.iterdir()] == ["photos"]
    assert main(["--out", str(out)]) == 2
    assert "already holds files" in one_error_line(capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == written


@needs_photos
def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert main(["--out", str(out)]) == 2
        assert "not a directory" in one_error_line(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@needs_photos
def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["--out", str(locked / "photos")]) == 2
    assert "not writable" in one_error_line(capsys)


def test_without_scikit_image_it_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(photo_folders, "skimage_photos", lambda: None)
    assert main(["--out", str(tmp_path / "photos")]) == 2
    assert "scikit-image is not installed" in one_error_line(capsys)
    assert not (tmp_path / "photos").exists()


@pytest.mark.subprocess
def test_the_tool_gives_one_line_and_exit_status_2(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "photo_imagefolder.py"), "--out",
                           str(tmp_path / "file")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stderr.startswith("error: --out") and "Traceback" not in proc.stderr
