"""The returned iterate: 'probe' keeps the iterate closest to P on distilled probes, start included,
without changing what the loop trains."""
import copy

import pytest
import torch
from torch import nn

from tests.zaq.test_engine import make_trainer, tiny_zaq
from zaqbench.quant import QConfig, quantize_model
from zaqbench.run.curves import returned_iteration
from zaqbench.zaq.engine import ZAQTrainer
from zaqbench.zaq.selection import ProbeSelection


def raw(model, x):
    return model(x)


def test_selection_keeps_the_closest_iterate_and_the_earlier_on_a_tie():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    model = copy.deepcopy(teacher)
    selection = ProbeSelection(teacher, torch.randn(5, 12), raw)
    selection.offer(0, model)
    start = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model[1].weight.add_(0.5)  # further from P
    selection.offer(10, model)
    assert selection.best_iteration == 0 and selection.scores[10] > selection.scores[0]
    returned, iteration = selection.choose(10, model)
    assert iteration == 0
    assert all(torch.equal(v, start[k]) for k, v in returned.state_dict().items())
    selection.offer(20, returned)  # the same model as the start: a tie keeps the start
    assert selection.best_iteration == 0


def test_choose_prefers_an_unscored_current_model_that_is_closer():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    far = copy.deepcopy(teacher)
    with torch.no_grad():
        far[1].weight.add_(1.0)
    selection = ProbeSelection(teacher, torch.randn(5, 12), raw)
    selection.offer(0, far)
    near = copy.deepcopy(teacher)
    returned, iteration = selection.choose(7, near)
    assert iteration == 7 and returned is near
    assert selection.best_iteration == 0  # only offered iterates are kept for later


def test_probe_selection_leaves_training_unchanged_and_returns_the_best_scored_iterate(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    plain = make_trainer(cls_adapter, teacher, tmp_path / "last", tiny_zaq(iters=4))
    plain.run()
    cfg = tiny_zaq(iters=4, returned_iterate="probe", probe_images=4, probe_distill_iters=3, probe_interval=2)
    probed = make_trainer(cls_adapter, teacher, tmp_path / "probe", cfg)
    returned = probed.run()
    for k, v in plain.qmodel.state_dict().items():  # the loop trained the same Q
        assert torch.equal(v, probed.qmodel.state_dict()[k]), k
    scores = probed.selection.scores
    assert sorted(scores) == [0, 2, 4]
    best = min(scores, key=lambda it: (scores[it], it))
    assert probed.returned_iteration == best
    assert probed.selection.score(returned) == pytest.approx(scores[best], abs=1e-6)


def test_probe_selection_resumes_to_the_same_choice(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    cfg = tiny_zaq(iters=4, recalibrate_at_end=False, returned_iterate="probe", probe_images=4,
                   probe_distill_iters=3, probe_interval=1)
    full = make_trainer(cls_adapter, teacher, tmp_path / "full", cfg)
    full_model = full.run()
    half = make_trainer(cls_adapter, teacher, tmp_path / "half", cfg)
    real_step = half.step

    def killed_in_third_iteration():
        if half.iteration == 2:
            raise SystemExit("killed")
        return real_step()

    half.step = killed_in_third_iteration
    with pytest.raises(SystemExit):
        half.run()
    resumed = make_trainer(cls_adapter, teacher, tmp_path / "half", cfg)
    resumed_model = resumed.run(resume=True)
    assert resumed.returned_iteration == full.returned_iteration
    assert resumed.selection.scores == pytest.approx(full.selection.scores, abs=1e-6)
    for k, v in full_model.state_dict().items():
        assert torch.allclose(v, resumed_model.state_dict()[k], atol=1e-6), k
    # the kept iterate never leaks into the training Q
    assert resumed.qmodel is not resumed_model


def test_snapshots_record_the_iterate_they_hold(cls_adapter, tmp_path):
    teacher = cls_adapter.build_model().eval()
    cfg = tiny_zaq(iters=3, returned_iterate="probe", probe_images=4, probe_distill_iters=2, probe_interval=2)
    torch.manual_seed(0)
    q, _ = quantize_model(teacher, QConfig(wbits=4, abits=4))
    trainer = ZAQTrainer(cls_adapter, teacher, q, cfg, tmp_path, seed=0, progress=False, snapshot_iters=(0, 1, 3))
    trainer.run()
    assert returned_iteration(tmp_path, 0) == 0
    assert returned_iteration(tmp_path, 1) in (0, 1)
    assert returned_iteration(tmp_path, 3) == trainer.returned_iteration


def test_paired_gain_counts_standard_errors_of_the_per_image_differences():
    from zaqbench.zaq.selection import paired_gain

    kept = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert paired_gain(torch.tensor([0.9, 1.1, 0.9, 1.1]), kept) == 0.0  # lower on half the images only
    assert paired_gain(torch.tensor([0.5, 0.5, 0.5, 0.5]), kept) == float("inf")
    gain = paired_gain(torch.tensor([0.8, 0.9, 0.8, 0.9]), kept)
    assert gain == pytest.approx(0.15 / (torch.tensor([0.2, 0.1, 0.2, 0.1]).std().item() / 2))


def test_with_a_margin_a_slightly_closer_iterate_does_not_replace_the_start():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    start = copy.deepcopy(teacher)
    with torch.no_grad():
        start[1].weight.add_(0.3 * torch.randn_like(start[1].weight))
    later = copy.deepcopy(start)
    with torch.no_grad():  # a little closer to P on average, not on every image
        later[1].weight.mul_(0.97).add_(0.03 * teacher[1].weight + 0.05 * torch.randn_like(later[1].weight))
    images = torch.randn(16, 12)
    plain, strict = (ProbeSelection(teacher, images, raw, z=z) for z in (0.0, 50.0))
    for selection in (plain, strict):
        selection.offer(0, start)
        selection.offer(10, later)
    assert plain.scores[10] < plain.scores[0]
    assert plain.best_iteration == 10 and strict.best_iteration == 0
