"""task.teacher.threads: the teacher trains with a pinned thread count (the trained teacher depends
on it on the CPU), restored afterwards, and the setting changes neither the teacher's cache file nor
any row's config hash."""
import pytest
import torch

from tests.conftest import tiny_cls_config
from zaqbench.devices import pinned_threads
from zaqbench.errors import UserError
from zaqbench.adapter import hashed_task
from zaqbench.run.teacher import get_teacher, teacher_cache_path


def build_cls(fmnist_root, cache_dir, **teacher):
    import tasks  # noqa: F401 - registers adapters
    from zaqbench.registry import build_task

    cfg = tiny_cls_config(teacher=dict(epochs=1, batch_size=32, lr=0.05, max_samples=64, **teacher))
    return build_task("cls", cfg=cfg, model_name="tiny", data_root=str(fmnist_root), cache_dir=cache_dir,
                      device=torch.device("cpu"))


def test_pinned_threads_sets_and_restores():
    before = torch.get_num_threads()
    with pinned_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with pinned_threads(before + 2):
            raise RuntimeError("training failed")
    assert torch.get_num_threads() == before  # restored on the way out of a failure too
    with pinned_threads(None):
        assert torch.get_num_threads() == before


def test_teacher_trains_with_the_pinned_threads_and_the_process_keeps_its_own(fmnist_root, tmp_path, monkeypatch):
    adapter = build_cls(fmnist_root, tmp_path / "cache", threads=2)
    seen = []
    monkeypatch.setattr(adapter, "train_teacher", lambda model: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()  # 1 in the tests (conftest)
    get_teacher(adapter, "cls", tmp_path / "cache")
    assert seen == [2] and torch.get_num_threads() == before


def test_threads_stay_out_of_the_cache_key_and_the_row_hash(fmnist_root, tmp_path):
    pinned = build_cls(fmnist_root, tmp_path / "cache", threads=2)
    free = build_cls(fmnist_root, tmp_path / "cache")
    assert teacher_cache_path(pinned, tmp_path, "cls") == teacher_cache_path(free, tmp_path, "cls")
    task = dict(type="cls", teacher=dict(epochs=6, threads=2))
    assert hashed_task(task) == dict(type="cls", teacher=dict(epochs=6))
    assert hashed_task(dict(type="cls")) == dict(type="cls")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_bad_thread_count_is_one_line_before_any_work(fmnist_root, tmp_path, value):
    adapter = build_cls(fmnist_root, tmp_path / "cache", threads=value)
    with pytest.raises(UserError, match="task.teacher.threads="):
        adapter.check()
    assert not (tmp_path / "cache" / "teachers").exists()
