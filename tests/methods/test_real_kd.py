"""real-kd: ZAQ's Q training on real images; the generator never trains and the data is real."""
import torch

from zaqbench.zaq.engine import ZAQConfig
from zaqbench.quant import QConfig, quantize_model
from zaqbench.zaq.real_kd import RealDataTrainer
from zaqbench.registry import build_method


def make(adapter, work_dir, iters=3, snapshot_iters=()):
    torch.manual_seed(0)
    teacher = adapter.build_model().eval()
    q, _ = quantize_model(teacher, QConfig(wbits=4, abits=4))
    cfg = ZAQConfig(iters=iters, q_steps=2, batch_size=4, nz=16, generator_channels=16, checkpoint_interval=1,
                    calib_batches=1, q_lr=0.01)
    return RealDataTrainer(adapter, teacher, q, cfg, work_dir, seed=0, progress=False,
                           snapshot_iters=snapshot_iters)


def test_q_trains_on_real_images_and_g_never_trains(cls_adapter, tmp_path):
    trainer = make(cls_adapter, tmp_path)
    train_images = cls_adapter.split("train").images
    batch = trainer.sample()
    # every training image is a real one (rows of the training split, as the adapter normalises them)
    assert all(any(torch.equal(row, img) for img in train_images) for row in batch)
    trainer = make(cls_adapter, tmp_path)
    q_before = {k: v.clone() for k, v in trainer.qmodel.state_dict().items()}
    g_before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    trainer.run()
    assert any(not torch.equal(v, trainer.qmodel.state_dict()[k]) for k, v in q_before.items())
    assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in g_before.items())


def test_snapshots_and_resume_leave_training_unchanged(cls_adapter, tmp_path):
    plain = make(cls_adapter, tmp_path / "plain")
    plain.run()
    snapshots = make(cls_adapter, tmp_path / "snap", snapshot_iters=(0, 1, 2))
    snapshots.run()
    first = make(cls_adapter, tmp_path / "resumed")
    first.calibrate(first.cfg.calib_batches)  # what run() does first, then one iteration, checkpointed
    first.step()
    first.save_checkpoint()
    resumed = make(cls_adapter, tmp_path / "resumed")
    resumed.run(resume=True)
    for other in (snapshots, resumed):
        assert all(torch.equal(v, other.qmodel.state_dict()[k]) for k, v in plain.qmodel.state_dict().items())


def test_real_kd_method_is_registered_with_zaq_options():
    method = build_method("real-kd", iters=2)
    assert method.name == "real-kd" and method.zaq_config().iters == 2
