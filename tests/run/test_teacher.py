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


def default_cls_adapter(cache_dir):
    import tasks  # noqa: F401 - registers adapters
    from mmengine.config import Config
    from zaqbench.registry import build_task
    from zaqbench.run.runner import REPO_ROOT

    cfg = Config.fromfile(str(REPO_ROOT / "configs" / "cls" / "resnet20.py"))
    return build_task("cls", cfg=cfg, model_name="resnet20", data_root=None, cache_dir=cache_dir,
                      device=torch.device("cpu"))


def test_the_default_cls_teacher_is_shipped_under_its_current_key(tmp_path):
    """A change to the teacher recipe changes its key; the shipped file must then be trained again."""
    from zaqbench.run.teacher import SHIPPED_TEACHERS

    name = teacher_cache_path(default_cls_adapter(tmp_path), tmp_path, "cls").name
    assert (SHIPPED_TEACHERS / name).is_file(), (
        f"configs/cls/resnet20.py's teacher key is now {name}: train it (ZAQBENCH_SHIPPED_TEACHERS=0 "
        "tools/run_task.py --task cls --model resnet20 --methods fp) and ship the cached file")


def test_a_shipped_teacher_is_loaded_and_cached_without_training(fmnist_root, tmp_path, monkeypatch, capsys):
    from zaqbench.run import teacher as teacher_module

    adapter = build_cls(fmnist_root, tmp_path / "cache")
    name = teacher_cache_path(adapter, tmp_path / "cache", "cls").name
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    reference = adapter.build_model()
    torch.save(reference.state_dict(), shipped / name)
    monkeypatch.setattr(teacher_module, "SHIPPED_TEACHERS", shipped)
    monkeypatch.setattr(adapter, "train_teacher", lambda model: pytest.fail("a shipped teacher was trained"))
    model, _ = get_teacher(adapter, "cls", tmp_path / "cache")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert (tmp_path / "cache" / "teachers" / name).is_file()
    assert "the shipped" in capsys.readouterr().err

    monkeypatch.setenv("ZAQBENCH_SHIPPED_TEACHERS", "0")  # the user asks to train it here
    trained = []
    monkeypatch.setattr(adapter, "train_teacher", lambda model: trained.append(1))
    get_teacher(adapter, "cls", tmp_path / "other-cache")
    assert trained == [1]
