"""``--device``: auto picks CUDA when there is one; bad input is one line naming what exists."""
import os

import pytest
import torch

from tests.run.test_runner import TINY, env, expect_error, rows, run  # noqa: F401 - env is a fixture
from zaqbench import devices
from zaqbench.devices import available_devices, loader_options, loader_workers, resolve_device, usable_cores
from zaqbench.errors import UserError


def test_auto_is_the_first_gpu_or_the_cpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto", cuda_count=0) == torch.device("cpu")
    assert resolve_device("auto", cuda_count=2) == torch.device("cuda", 0)
    assert resolve_device("cuda", cuda_count=2) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", cuda_count=2) == torch.device("cuda", 1)
    assert resolve_device(None, cuda_count=0) == torch.device("cpu")
    assert available_devices(2) == ["cpu", "cuda:0", "cuda:1"]


def test_under_torchrun_each_rank_takes_its_local_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_device("auto", cuda_count=2) == torch.device("cuda", 1)
    assert resolve_device("cpu", cuda_count=2) == torch.device("cpu")
    with pytest.raises(UserError, match="torchrun starts one process per GPU"):
        resolve_device("cuda:0", cuda_count=2)
    with pytest.raises(UserError, match="LOCAL_RANK 1 does not exist; this machine has: cpu, cuda:0$"):
        resolve_device("auto", cuda_count=1)


@pytest.mark.parametrize("spec, message", [
    ("cuda", "no CUDA device is available (this machine has: cpu, cuda:0"),  # with count 0 below
    ("cuda:2", "cuda:2 does not exist; this machine has: cpu, cuda:0, cuda:1"),
    ("meta", "'meta' is not supported"),
    ("gpu0", "'gpu0' is not a device"),
    ("cpu:3", "the CPU has no index"),
])
def test_bad_devices_name_what_exists(monkeypatch, spec, message):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    count = 0 if spec == "cuda" else 2
    message = message.replace(", cuda:0", "") if count == 0 else message
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(spec, cuda_count=count)


def test_loader_options_pin_and_prefetch_on_gpus_only(monkeypatch):
    monkeypatch.setattr(devices, "usable_cores", lambda: 16)
    assert loader_options(torch.device("cpu"), 0) == {"num_workers": 0, "pin_memory": False,
                                                      "persistent_workers": False}
    gpu = loader_options(torch.device("cuda", 0), 4)
    assert gpu == {"num_workers": 4, "pin_memory": True, "persistent_workers": True}
    assert loader_options(torch.device("cuda", 0), 0)["num_workers"] == 0


@pytest.mark.parametrize("cores, requested, started", [(1, 8, 0), (2, 4, 0), (3, 8, 2), (16, 8, 8), (16, 0, 0)])
def test_loader_workers_follow_the_cores_of_this_process(monkeypatch, cores, requested, started):
    """None on 2 cores or fewer (a worker would take a core from the model), else at most cores - 1."""
    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    assert loader_workers(requested) == started


def test_usable_cores_is_the_affinity_mask():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))


def test_runner_bad_device_is_one_line_and_no_row(env, capsys):
    for spec in ("meta", "cuda:7" if torch.cuda.device_count() < 8 else "cuda:99"):
        expect_error(capsys, run(env, "--methods", "fp", "--device", spec), spec, "this machine has: cpu")
        assert rows(env["out"]) == []


def test_runner_records_the_device_it_chose(env, capsys):
    assert run(env, "--methods", "ptq", options=TINY) == 0  # --device defaults to auto
    expected = "cuda:0" if torch.cuda.is_available() else f"cpu threads={torch.get_num_threads()}"
    assert rows(env["out"])[0]["device"].startswith(expected)
    assert "device: " + expected in capsys.readouterr().err
