"""Data-parallel runs on the CPU: gloo, 2 processes started with torch.multiprocessing.spawn.

Each worker joins the group the way torchrun's environment makes it (``init_from_env``),
runs the code under test and rank 0 saves what it computed; the test compares it with
the same computation in this (single) process.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import make_fashion_mnist, tiny_cls_config
from tests.toy_task import ToyAdapter
from zaqbench import distributed
from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer
from zaqbench.errors import UserError
from zaqbench.methods import ZAQ, NoisePTQ, RunContext, ZeroQ
from zaqbench.quant import QConfig, quantize_model, quantizer_state

WORLD = 2
# official loop settings (Q's BN trains, SGD on every parameter) plus the BN-statistics prior:
# every statistic over the batch (G's BN, Q's BN, P's BN prior) must be the global batch's
# every layer of the toy net quantized: a layer's input then depends on the ranges of the ones before
QCFG = QConfig(wbits=4, abits=4, first_fp=False, last_fp=False)
CFG = dict(iters=1, batch_size=32, q_steps=1, nz=16, generator_channels=16, calib_batches=2,
           bns_weight=0.1, checkpoint_interval=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, port: int, world: int = WORLD) -> None:
    """What torchrun's environment gives a worker (world 1: a plain single process)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env(torch.device("cpu")) == (world > 1)


def spawn(fn, *args, world: int = WORLD) -> None:
    """Start ``world`` workers; a free port can be taken by another process before rank 0 listens
    on it (the machine is shared), so that one failure is retried on a new port."""
    for attempt in range(3):
        try:
            mp.spawn(fn, args=(free_port(), *args), nprocs=world, join=True)
            return
        except mp.ProcessRaisedException as err:
            if "EADDRINUSE" not in str(err) or attempt == 2:
                raise


def toy_adapter(tmp: Path) -> ToyAdapter:
    return ToyAdapter(cfg={"task": {"type": "toy", "width": 8}}, model_name="toy", data_root=None,
                      cache_dir=tmp / "cache", device=torch.device("cpu"))


def toy_teacher(adapter: ToyAdapter, tmp: Path) -> torch.nn.Module:
    """Trained once here, loaded by the workers: every process starts from the same P."""
    path = tmp / "teacher.pth"
    torch.manual_seed(0)  # the same teacher whatever ran before in this process
    model = adapter.build_model()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        adapter.train_teacher(model)
        torch.save(model.state_dict(), path)
    return model.eval()


def trainer(adapter, teacher, work_dir: Path, trainer_cls=ZAQTrainer, **cfg) -> ZAQTrainer:
    qmodel, _ = quantize_model(teacher, QCFG, example_input=torch.zeros(2, 1, 8, 8))
    return trainer_cls(adapter, teacher, qmodel, ZAQConfig(**{**CFG, **cfg}), work_dir, seed=0, progress=False)


def first_step(adapter, teacher, work_dir: Path) -> dict:
    t = trainer(adapter, teacher, work_dir)
    t.calibrate(t.cfg.calib_batches)
    losses = t.step()
    return {"q": t.qmodel.state_dict(), "g": t.generator.state_dict(), "ranges": quantizer_state(t.qmodel),
            "g_grad": {n: p.grad for n, p in t.generator.named_parameters()}, "losses": losses}


def cls_evaluation(tmp: Path) -> float:
    import tasks  # noqa: F401 - registers the cls adapter
    from zaqbench.registry import build_task

    adapter = build_task("cls", cfg=tiny_cls_config(eval=dict(batch_size=10)), model_name="tiny",
                         data_root=str(tmp / "fmnist"), cache_dir=tmp / "cache", device=torch.device("cpu"))
    torch.manual_seed(1)
    return adapter.evaluate(adapter.build_model())["top1"]  # 48 images in 5 batches: ranks get 3 and 2


def calibrated_ranges(adapter, teacher, tmp: Path) -> dict:
    ctx = RunContext(adapter, teacher, QCFG, seed=0, work_dir=tmp / "calib", progress=False)
    out = {}
    for name, method in (("ptq", NoisePTQ(batch_size=8, calib_batches=3)),
                         ("zeroq", ZeroQ(batch_size=8, calib_batches=3, distill_iters=3))):
        out[name] = quantizer_state(method.run(ctx).model)
    return out


def _worker_checks(rank: int, port: int, tmp: str, world: int) -> None:
    join(rank, port, world)
    tmp = Path(tmp)
    adapter = toy_adapter(tmp)
    teacher = toy_teacher(adapter, tmp)
    result = {"step": first_step(adapter, teacher, tmp / f"rank{rank}"),
              "top1": cls_evaluation(tmp), "ranges": calibrated_ranges(adapter, teacher, tmp)}
    try:
        ZAQ(batch_size=3)
    except UserError as err:
        result["indivisible"] = str(err)
    if rank == 0:
        torch.save(result, tmp / f"world{world}.pth")
    distributed.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same checks in 2 processes and, as the reference, in 1 (a fresh process as well, so
    both sides run in the same conditions: one thread, nothing left over from other tests)."""
    tmp = tmp_path_factory.mktemp("ddp")
    make_fashion_mnist(tmp / "fmnist")
    toy_teacher(toy_adapter(tmp), tmp)
    for world in (WORLD, 1):
        spawn(_worker_checks, str(tmp), world, world=world)
    return tmp, torch.load(tmp / f"world{WORLD}.pth", weights_only=True), torch.load(tmp / "world1.pth",
                                                                                     weights_only=True)


def assert_close_dicts(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


@pytest.mark.slow
def test_first_zaq_step_2x16_equals_1x32(runs):
    tmp, dist_result, single_result = runs
    adapter = toy_adapter(tmp)
    single, two = single_result["step"], dist_result["step"]
    assert_close_dicts(two["ranges"], single["ranges"], rtol=1e-5, atol=1e-6)
    # Q's weights after the SGD step; its BN running statistics (Q's BN trains here) are averages of
    # quantized activations, where an input within rounding of a quantization boundary may land on
    # the other grid point in one of the two runs: looser there (seen: 9e-5 with another teacher)
    stats = [k for k in single["q"] if "running" in k or "num_batches" in k]
    assert_close_dicts({k: v for k, v in two["q"].items() if k not in stats},
                       {k: v for k, v in single["q"].items() if k not in stats}, rtol=1e-4, atol=1e-5)
    assert_close_dicts({k: two["q"][k] for k in stats}, {k: single["q"][k] for k in stats}, rtol=1e-3, atol=1e-3)
    # G's gradient, averaged over the ranks, is the global batch's. (Its Adam update is not
    # compared element by element: the first Adam step is about lr * sign(grad), and the biases
    # of convs followed by BN have a gradient that is 0 up to rounding, whose sign is noise.)
    # Compared as one vector (relative error of the difference): G's gradient flows back through
    # quantized Q, where an activation within rounding of a grid boundary can round the other way in
    # one run and move a few elements by ~1e-5 of the largest gradient, depending on the CPU's
    # kernels (and conv biases before a BN have a gradient that is rounding noise); a gradient not
    # averaged over the ranks would be off by a factor of 2.
    assert two["g_grad"].keys() == single["g_grad"].keys()
    flat = {run: torch.cat([g.flatten() for g in grads.values()]) for run, grads in
            (("two", two["g_grad"]), ("single", single["g_grad"]))}
    error = (flat["two"] - flat["single"]).norm() / flat["single"].norm()
    assert error < 1e-3, f"G's gradient: relative error {error:.2e}"
    buffers = [k for k in single["g"] if "running" in k]
    assert_close_dicts({k: two["g"][k] for k in buffers}, {k: single["g"][k] for k in buffers},
                       rtol=1e-4, atol=1e-6)
    for k, v in single["losses"].items():
        assert two["losses"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    # the step did move Q and G (the comparison is not between two untouched models)
    start = trainer(adapter, toy_teacher(adapter, tmp), tmp / "start")
    assert not torch.allclose(start.generator.project.weight, single["g"]["project.weight"])
    assert not torch.allclose(start.qmodel.state_dict()["0.weight"], single["q"]["0.weight"])


def test_sharded_evaluation_equals_single_process(runs):
    tmp, dist_result, single_result = runs
    assert dist_result["top1"] == single_result["top1"] == cls_evaluation(tmp)  # exactly: whole batches per rank, integer counts summed


def test_calibration_ranges_reduced_over_ranks(runs):
    _, dist_result, single_result = runs
    single = single_result["ranges"]
    # each rank observed half of every batch's rows; ZeroQ distilled each rank's half of every
    # batch with the whole batch's BN statistics
    for method in ("ptq", "zeroq"):
        assert_close_dicts(dist_result["ranges"][method], single[method], rtol=1e-5, atol=1e-6)


def test_global_batch_must_split_over_ranks(runs):
    _, dist_result, single_result = runs
    assert "batch_size=3 cannot be split over 2 processes" in dist_result["indivisible"]
    assert "indivisible" not in single_result


class KilledAt3(ZAQTrainer):
    """Dies without any clean-up (os._exit) once iteration 3 is logged, on every rank."""

    def _log(self, losses):
        super()._log(losses)
        if self.iteration == 3:
            os._exit(3)


def _worker_killed(rank: int, port: int, tmp: str) -> None:
    join(rank, port)
    tmp = Path(tmp)
    adapter = toy_adapter(tmp)
    trainer(adapter, toy_teacher(adapter, tmp), tmp / "run", KilledAt3, iters=4).run()


def _worker_resume(rank: int, port: int, tmp: str) -> None:
    join(rank, port)
    tmp = Path(tmp)
    adapter = toy_adapter(tmp)
    teacher = toy_teacher(adapter, tmp)
    resumed = trainer(adapter, teacher, tmp / "run", iters=4).run(resume=True)
    reference = trainer(adapter, teacher, tmp / "reference", iters=4).run()  # the same ranks, never killed
    if rank == 0:
        torch.save({"resumed": resumed.state_dict(), "reference": reference.state_dict()}, tmp / "resumed.pth")
    distributed.shutdown()


@pytest.mark.slow
def test_killed_two_process_run_resumes(tmp_path):
    adapter = toy_adapter(tmp_path)
    teacher = toy_teacher(adapter, tmp_path)
    with pytest.raises(mp.ProcessExitedException):
        spawn(_worker_killed, str(tmp_path))
    state = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert state["iteration"] == 2  # the last checkpoint before the kill (interval 2)
    assert [json.loads(ln)["iter"] for ln in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()] \
        == [1, 2, 3]  # one writer: each iteration once; 3 is newer than the checkpoint

    shutil.copytree(tmp_path / "run", tmp_path / "run-one")  # the killed run, to resume in one process below
    spawn(_worker_resume, str(tmp_path))  # two ranks again
    out = torch.load(tmp_path / "resumed.pth", weights_only=True)
    logged = [json.loads(ln)["iter"] for ln in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    # the checkpoint holds the whole state: resuming gives what the run would have given
    assert_close_dicts(out["resumed"], out["reference"], rtol=0, atol=0)

    # the killed run's checkpoint resumes in one process as well. Its last two iterations sum
    # the batch in another order, and G's Adam steps (about lr * sign(grad)) amplify rounding in
    # gradients that are 0 up to rounding, so only closeness is checked (resuming from scratch,
    # or without G's state, would be far off: checked below)
    one = trainer(adapter, teacher, tmp_path / "run-one", iters=4).run(resume=True)
    assert_close_dicts(one.state_dict(), out["reference"], rtol=0.05, atol=5e-3)
    fresh = trainer(adapter, teacher, tmp_path / "fresh", iters=2).run()
    assert max((fresh.state_dict()[k] - out["reference"][k]).abs().max().item()
               for k in out["reference"] if "running" in k) > 5e-2
