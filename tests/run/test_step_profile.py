import torch

from zaqbench.quant import QConfig, quantize_model
from zaqbench.run.step_profile import FAKE_QUANT, GENERATOR, OPTIMISER_PREFIX, P_NET, Q_NET, format_table, profile_step
from zaqbench.zaq.discrepancy import PROFILE_LABELS
from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer


def test_one_step_is_split_into_the_loops_parts_and_the_hooks_go(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    qmodel, _ = quantize_model(teacher, QConfig(wbits=4, abits=4))
    cfg = ZAQConfig(iters=2, q_steps=2, batch_size=4, nz=16, generator_channels=16, calib_batches=1)
    trainer = ZAQTrainer(cls_adapter, teacher, qmodel, cfg, tmp_path, seed=0, progress=False)
    trainer.calibrate(1)
    wall, parts, _ = profile_step(trainer)
    # every part of the loop shows up, and backward time lands on the part whose forward made it
    for label in (PROFILE_LABELS["spatial"], PROFILE_LABELS["channel"], Q_NET, GENERATOR):
        assert parts[label].forward_s > 0 and parts[label].backward_s > 0, label
    assert parts[P_NET].forward_s > 0 and parts[P_NET].backward_s > 0  # the G step goes back through P
    assert parts[FAKE_QUANT].forward_s > 0 and parts[OPTIMISER_PREFIX].forward_s > 0
    assert sum(p.total_s for p in parts.values()) <= wall * 1.05
    table = format_table(wall, parts)
    assert "relation maps, spatial" in table and table.count("\n") == len(parts) + 3
    modules = [*trainer.qmodel.modules(), *trainer.teacher.modules(), *trainer.generator.modules()]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
