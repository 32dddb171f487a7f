import json

import pytest
import torch

from zaqbench.zaq.engine import DivergenceError, ZAQConfig, ZAQTrainer
from zaqbench.errors import UserError
from zaqbench.quant import QConfig, quantize_model
from zaqbench.zaq.zeroq import bn_statistics_loss, distill_batch


def tiny_zaq(**kw):
    base = dict(iters=2, q_steps=2, batch_size=4, nz=16, generator_channels=16, checkpoint_interval=1,
                calib_batches=1, q_lr=0.01)
    base.update(kw)
    return ZAQConfig(**base)


def make_trainer(adapter, teacher, work_dir, cfg, seed=0):
    torch.manual_seed(seed)
    q, _ = quantize_model(teacher, QConfig(wbits=4, abits=4))
    return ZAQTrainer(adapter, teacher, q, cfg, work_dir, seed=seed, progress=False)


def test_two_iterations_change_q_and_g_and_leave_p(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    p_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = make_trainer(cls_adapter, teacher, tmp_path, tiny_zaq())
    q_before = {k: v.clone() for k, v in trainer.qmodel.state_dict().items()}
    g_before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    trainer.run()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in p_before.items())
    assert any(not torch.equal(v, trainer.qmodel.state_dict()[k]) for k, v in q_before.items())
    assert any(not torch.equal(v, trainer.generator.state_dict()[k]) for k, v in g_before.items())
    lines = (tmp_path / "losses.jsonl").read_text().splitlines()
    assert [json.loads(ln)["iter"] for ln in lines] == [1, 2]
    assert (tmp_path / "generator.pth").exists()


@pytest.mark.parametrize("options", [{}, {"q_anchor_fraction": 0.5, "calib_batches": 2}],
                         ids=["plain", "anchor-images"])
def test_resume_reproduces_uninterrupted_run(cls_adapter, tmp_path, options):
    teacher = cls_adapter.build_model().eval()
    cfg = tiny_zaq(iters=4, recalibrate_at_end=False, **options)
    full = make_trainer(cls_adapter, teacher, tmp_path / "full", cfg)
    full.run()
    half = make_trainer(cls_adapter, teacher, tmp_path / "half", cfg)
    real_step = half.step

    def killed_in_third_iteration():
        if half.iteration == 2:
            raise SystemExit("killed")  # like SIGKILL: nothing after the last checkpoint survives
        return real_step()

    half.step = killed_in_third_iteration
    with pytest.raises(SystemExit):
        half.run()
    resumed = make_trainer(cls_adapter, teacher, tmp_path / "half", cfg)
    resumed.run(resume=True)
    assert resumed.iteration == 4
    for k, v in full.qmodel.state_dict().items():
        assert torch.allclose(v, resumed.qmodel.state_dict()[k], atol=1e-6), k
    for k, v in full.generator.state_dict().items():
        assert torch.allclose(v, resumed.generator.state_dict()[k], atol=1e-6), k
    iters = [json.loads(ln)["iter"] for ln in (tmp_path / "half" / "losses.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4]


def test_checkpoint_is_weights_only_loadable(cls_adapter, tmp_path):
    trainer = make_trainer(cls_adapter, cls_adapter.build_model().eval(), tmp_path, tiny_zaq(iters=1))
    trainer.run()
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert state["iteration"] == 1 and "opt_q" in state and "rng" in state


def test_nan_guard_fires_and_keeps_last_good_checkpoint(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    trainer = make_trainer(cls_adapter, teacher, tmp_path, tiny_zaq(iters=3))
    real_step = trainer.step

    def poisoned_step():
        losses = real_step()
        if trainer.iteration == 2:
            losses["loss_q"] = float("nan")
        return losses

    trainer.step = poisoned_step
    with pytest.raises(DivergenceError, match="iteration 2"):
        trainer.run()
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["iteration"] == 1


def test_resume_with_other_config_is_refused(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    make_trainer(cls_adapter, teacher, tmp_path, tiny_zaq(iters=1)).run()
    other = make_trainer(cls_adapter, teacher, tmp_path, tiny_zaq(iters=1, alpha=0.5))
    with pytest.raises(Exception, match="different ZAQ config"):
        other.run(resume=True)


def test_zeroq_distillation_reduces_bn_loss(cls_adapter):
    teacher = cls_adapter.build_model()
    teacher.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(5):
            teacher(torch.randn(16, 1, 16, 16) * 0.5 + 0.3)
    teacher.eval()
    rng = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    before = bn_statistics_loss(teacher, x0, lambda m, t: m(t)).item()
    x, curve = distill_batch(cls_adapter, teacher, 8, 30, 0.1, rng, progress=False)
    after = bn_statistics_loss(teacher, x, lambda m, t: m(t)).item()
    assert after < 0.5 * before
    assert curve[-1] < curve[0]
    assert all(p.grad is None for p in teacher.parameters())  # only the inputs were optimised


def test_unknown_zaq_option_is_an_error():
    with pytest.raises(Exception, match=r"unknown option\(s\) \['itres'\] in methods.zaq"):
        ZAQConfig.from_dict({"itres": 3})


def test_ctrl_c_finishes_the_iteration_saves_and_exits(cls_adapter, tmp_path):
    import os
    import signal

    from zaqbench.zaq.engine import Interrupted

    trainer = make_trainer(cls_adapter, cls_adapter.build_model().eval(), tmp_path,
                           tiny_zaq(iters=5, checkpoint_interval=100))
    real_step = trainer.step

    def step_then_ctrl_c():
        losses = real_step()
        if trainer.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return losses

    trainer.step = step_then_ctrl_c
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, Python's default otherwise
    with pytest.raises(Interrupted, match="--resume"):
        trainer.run()
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["iteration"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # whatever was installed before is restored


def test_ctrl_c_handling_works_when_sigint_starts_ignored(cls_adapter, tmp_path):
    """Under ``nohup`` SIGINT starts ignored: the loop still installs its handler and restores SIG_IGN."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        test_ctrl_c_finishes_the_iteration_saves_and_exits(cls_adapter, tmp_path)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_anchor_images_replace_a_share_of_each_q_batch_and_leave_the_rest_unchanged(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    plain = make_trainer(cls_adapter, teacher, tmp_path / "plain", tiny_zaq(batch_size=8, calib_batches=2))
    anchored_cfg = tiny_zaq(batch_size=8, calib_batches=2, q_anchor_fraction=0.25)
    anchored = make_trainer(cls_adapter, teacher, tmp_path / "anchored", anchored_cfg)
    again = make_trainer(cls_adapter, teacher, tmp_path / "again", anchored_cfg)
    assert len(anchored.anchors) == 2 and anchored.anchors[0].shape[0] == 8
    assert all(torch.equal(a, b) for a, b in zip(anchored.anchors, again.anchors))  # same set every time
    assert not torch.equal(anchored.anchors[0], anchored.anchors[1])
    # drawing the anchors touched neither the training RNG nor G's buffers
    for k, v in plain.generator.state_dict().items():
        assert torch.equal(v, anchored.generator.state_dict()[k]), k
    x_plain, x_anchored = plain.q_batch(0), anchored.q_batch(1)
    assert torch.equal(x_anchored[:6], x_plain[:6])  # 6 of 8 rows are G's, the same draw
    assert torch.equal(x_anchored[6:], anchored.anchors[1][:2])  # 2 rows from the anchor batch for step 1


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
def test_anchor_fraction_outside_zero_one_is_refused(value):
    with pytest.raises(UserError, match="methods.zaq.q_anchor_fraction="):
        ZAQConfig.from_dict({"q_anchor_fraction": value})
    assert "q_anchor_fraction" not in ZAQConfig().to_dict()  # off: not hashed, older rows keep their hashes


@pytest.mark.parametrize("options", [{}, {"q_optimizer": "adam-grid", "q_params": "quantized-weights",
                                          "q_bn_update": False, "bns_weight": 0.1, "gen_output": "valid-range"}])
def test_losses_with_chunked_relation_maps_are_bit_identical(cls_adapter, tmp_path, monkeypatch, options):
    """Three ZAQ iterations give bit-identical losses and Q weights whether D_f's spatial maps
    are computed chunk by chunk (several chunks here) or as one autograd graph."""
    import zaqbench.zaq.discrepancy as discrepancy

    teacher = cls_adapter.build_model().eval()
    cfg = tiny_zaq(iters=3, batch_size=6, calib_batches=1, **options)
    chunked = discrepancy.spatial_relation
    runs = []
    # 2 * 64 * 64 attention entries per chunk: layer1 (16 x 16) one sample per chunk, layer2 two
    for relation in (discrepancy.spatial_relation_autograd, lambda feat: chunked(feat, 2 * 64 * 64)):
        monkeypatch.setattr(discrepancy, "spatial_relation", relation)
        trainer = make_trainer(cls_adapter, teacher, tmp_path / str(len(runs)), cfg)
        trainer.calibrate(1)
        losses = [trainer.step() for _ in range(cfg.iters)]
        runs.append((losses, {k: v.clone() for k, v in trainer.qmodel.state_dict().items()}))
    (losses_a, q_a), (losses_c, q_c) = runs
    assert losses_a == losses_c and losses_a[0]["d_f"] > 0
    assert all(torch.equal(v, q_c[k]) for k, v in q_a.items())
