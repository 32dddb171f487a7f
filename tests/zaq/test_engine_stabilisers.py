"""The ZAQ stabilisers: each is checked for what it promises, on tiny shapes."""
import json

import pytest
import torch
from torch import nn

from zaqbench.adapter import InputSpec
from zaqbench.zaq.diagnostics import clip_fractions, image_stats
from zaqbench.zaq.engine import ZAQConfig, ZAQTrainer
from zaqbench.errors import UserError
from zaqbench.zaq.generator import Generator, valid_input_range
from zaqbench.quant import QConfig, calibrate_activations, quant_layers, quantize_model
from zaqbench.zaq.trust_region import WeightTrustRegion, weight_step
from zaqbench.zaq.zeroq import bn_statistics_terms


def tiny_zaq(**kw):
    base = dict(iters=3, q_steps=2, batch_size=4, nz=16, generator_channels=16, checkpoint_interval=1,
                calib_batches=1, q_lr=0.05, recalibrate_at_end=False)
    base.update(kw)
    return ZAQConfig(**base)


def make_trainer(adapter, work_dir, cfg, **kw):
    teacher = adapter.build_model().eval()
    q, _ = quantize_model(teacher, QConfig(wbits=4, abits=4))
    return teacher, ZAQTrainer(adapter, teacher, q, cfg, work_dir, seed=0, progress=False, **kw)


@pytest.mark.parametrize("option, value", [
    ("iters", 0), ("q_steps", -1), ("batch_size", 2.5), ("q_lr", 0.0), ("alpha", -1.0),
    ("q_trust_steps", float("nan")), ("lr_milestones", (0.5, 1.5)), ("lr_gamma", 0.0),
    ("gen_output", "sigmoid"), ("q_params", "bn-only"), ("feature_weights", "random"),
    ("checkpoint_interval", 0), ("g_betas", (0.9,)), ("q_optimizer", "rmsprop"),
])
def test_impossible_values_name_the_option(option, value):
    with pytest.raises(UserError, match=f"methods.zaq.{option}="):
        ZAQConfig.from_dict({option: value})


def test_trust_region_needs_quantized_weights_only():
    with pytest.raises(UserError, match="q_params"):
        ZAQConfig(q_trust_steps=1.0)
    ZAQConfig(q_trust_steps=1.0, q_params="quantized-weights")  # fine


def test_valid_range_generator_stays_within_pixel_range():
    spec = InputSpec(3, 16, 16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    g = Generator(spec, nz=8, channels=16, output="valid-range")
    with torch.no_grad():
        for p in g.parameters():  # blow the weights up: the output must still be bounded
            p.mul_(50)
        x = g(torch.randn(6, 8))
    lo, hi = valid_input_range(spec)
    assert x.shape == (6, 3, 16, 16)
    assert bool((x >= lo - 1e-5).all()) and bool((x <= hi + 1e-5).all())
    assert image_stats(x, spec)["img_outside"] == 0.0
    # the official head leaves single pixels unbounded
    g_bn = Generator(spec, nz=8, channels=16, output="bn")
    with torch.no_grad():
        assert image_stats(g_bn(torch.randn(6, 8)), spec)["img_outside"] > 0.0


def test_weight_step_matches_the_quantizer_grid():
    q, _ = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3)),
                          QConfig(wbits=4, abits=4))
    layer = q[1]
    step = weight_step(layer.weight, layer.weight_quant)
    assert step.shape == (4, 1, 1, 1)
    wq = layer.weight_quant(layer.weight.detach())
    # fake-quantized weights lie on multiples of the step (symmetric grid)
    ratio = wq / step
    assert torch.allclose(ratio, ratio.round(), atol=1e-4)


def test_weight_step_follows_a_quantizer_that_keeps_its_own_range():
    """zaq-code's weights (include_zero=False): a channel in [1, 2] has step 1/15 at 4 bits, not 2/15."""
    from zaqbench.quant.fake_quant import FakeQuantizer

    weight = torch.tensor([[1.0, 1.5, 2.0], [-2.0, 0.0, 1.0]])
    own = FakeQuantizer(4, symmetric=False, per_channel=True, range_rule="current", include_zero=False,
                        rounding="after-zero-point")
    widened = FakeQuantizer(4, symmetric=False, per_channel=True, range_rule="current")
    assert torch.allclose(weight_step(weight, own).flatten(), torch.tensor([1 / 15, 3 / 15]))
    assert torch.allclose(weight_step(weight, widened).flatten(), torch.tensor([2 / 15, 3 / 15]))


def test_trust_region_projection_bounds_weights():
    q, _ = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3)),
                          QConfig(wbits=4, abits=4))
    ref = q[1].weight.detach().clone()
    step = weight_step(ref, q[1].weight_quant)
    region = WeightTrustRegion(q, steps=1.5)
    assert len(region.bounds) == 1  # first and last layer stay full precision
    with torch.no_grad():
        q[1].weight.add_(torch.randn_like(ref) * 10 * step)
    region.project()
    assert bool(((q[1].weight - ref).abs() <= 1.5 * step + 1e-6).all())
    assert region.drift_in_steps() == pytest.approx(1.5, rel=1e-4)
    with torch.no_grad():
        q[1].weight.copy_(ref + 0.5 * step)
    region.project()  # inside the region: untouched
    assert torch.allclose(q[1].weight, ref + 0.5 * step)


def test_trainer_with_trust_region_moves_only_quantized_weights_within_bounds(cls_adapter, tmp_path):
    cfg = tiny_zaq(q_params="quantized-weights", q_trust_steps=1.0, q_lr=1.0, gen_output="valid-range",
                   bns_weight=0.1, q_bn_update=False)
    teacher, trainer = make_trainer(cls_adapter, tmp_path, cfg)
    quantized = {f"{name}.weight" for name, layer in quant_layers(trainer.qmodel) if layer.weight_quant.active}
    before = {k: v.clone() for k, v in trainer.qmodel.state_dict().items()}
    trainer.run()
    after = trainer.qmodel.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed and changed <= quantized  # BN, biases, first/last layers untouched
    assert trainer.trust_region.drift_in_steps() <= 1.0 + 1e-4
    log = [json.loads(ln) for ln in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert all(entry["img_outside"] == 0.0 for entry in log)
    assert all(entry["bns"] > 0 for entry in log)
    assert len(log[0]["d_f_layers"]) == 3 and set(log[0]["clipped"]) == {
        name for name, layer in quant_layers(trainer.qmodel) if layer.act_quant.active}


def test_without_trust_region_a_large_lr_moves_weights_further(cls_adapter, tmp_path):
    _, free = make_trainer(cls_adapter, tmp_path / "free", tiny_zaq(q_lr=100.0, q_params="quantized-weights"))
    free.run()
    bounded_cfg = tiny_zaq(q_lr=100.0, q_params="quantized-weights", q_trust_steps=1.0)
    _, bounded = make_trainer(cls_adapter, tmp_path / "bounded", bounded_cfg)
    bounded.run()
    free_drift = json.loads((tmp_path / "free" / "losses.jsonl").read_text().splitlines()[-1])["w_drift"]
    bounded_drift = json.loads((tmp_path / "bounded" / "losses.jsonl").read_text().splitlines()[-1])["w_drift"]
    assert bounded_drift < free_drift


def test_snapshots_hold_the_model_at_each_point(cls_adapter, tmp_path):
    _, trainer = make_trainer(cls_adapter, tmp_path, tiny_zaq(), snapshot_iters=(0, 2, 3))
    start = {k: v.clone() for k, v in trainer.qmodel.state_dict().items()}
    trainer.run()
    files = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert files == ["iter_000000.pth", "iter_000002.pth", "iter_000003.pth"]
    first = torch.load(tmp_path / "snapshots" / "iter_000000.pth", weights_only=True)
    last = torch.load(tmp_path / "snapshots" / "iter_000003.pth", weights_only=True)
    assert all(torch.equal(v, first["qmodel"][k]) for k, v in start.items())
    assert all(torch.equal(v, last["qmodel"][k]) for k, v in trainer.qmodel.state_dict().items())
    assert any(not torch.equal(v, last["qmodel"][k]) for k, v in first["qmodel"].items())
    assert torch.isfinite(first["quantizer"][next(iter(first["quantizer"]))])


def test_clip_fractions_counts_values_outside_the_range_and_removes_hooks():
    q, _ = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)),
                          QConfig(wbits=8, abits=8))
    calibrate_activations(q, [torch.linspace(0, 1, 400).view(100, 4)], lambda m, x: m[1](x))
    x = torch.cat([torch.full((50, 4), 0.5), torch.full((50, 4), 3.0)])  # half far above the range
    with clip_fractions(q) as fractions:
        q[1](x)
    assert fractions == {"1": pytest.approx(0.5)}
    assert not q[1].act_quant._forward_pre_hooks


def test_bn_statistics_terms_vanish_when_batch_matches_running_stats():
    bn = nn.BatchNorm2d(3, eps=0.0).eval()
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    with torch.no_grad():
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
    with bn_statistics_terms(bn) as terms:
        bn(x)
        bn(x + 1)
    assert terms[0].item() == pytest.approx(0.0, abs=1e-4)
    assert terms[1].item() == pytest.approx(3 ** 0.5, rel=1e-3)  # mean off by 1 in each of 3 channels
    assert not bn._forward_pre_hooks


def test_grid_scaled_adam_moves_each_channel_in_its_own_grid_steps():
    q, _ = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3)),
                          QConfig(wbits=4, abits=4))
    with torch.no_grad():  # channels of very different scale: their grid steps differ 100x
        q[1].weight[0].mul_(100)
    ref = q[1].weight.detach().clone()
    step = weight_step(ref, q[1].weight_quant)
    from zaqbench.zaq.trust_region import GridScaledUpdates

    updates = GridScaledUpdates(q)
    opt = torch.optim.Adam([q[1].weight], lr=0.1)
    q[1].weight.grad = torch.randn_like(ref)
    updates.remember()
    opt.step()
    updates.rescale()
    moved_in_steps = (q[1].weight - ref).abs() / step
    # Adam's first update is lr * sign(grad): exactly 0.1 grid steps of each weight's own channel
    assert torch.allclose(moved_in_steps, torch.full_like(moved_in_steps, 0.1), rtol=1e-3)


def test_grid_optimizer_needs_quantized_weights_only():
    with pytest.raises(UserError, match="q_optimizer"):
        ZAQConfig(q_optimizer="adam-grid")


def _three_convs(bits: int) -> nn.Module:
    torch.manual_seed(0)
    q, _ = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3)),
                          QConfig(wbits=bits, abits=bits))
    return q


def test_proximal_pull_penalty_is_half_squared_drift_in_grid_steps():
    from zaqbench.zaq.trust_region import ProximalPull

    q = _three_convs(4)
    ref = q[1].weight.detach().clone()
    step = weight_step(ref, q[1].weight_quant)
    pull = ProximalPull(q)
    assert len(pull.anchors) == 1  # first and last layer stay full precision
    assert float(pull.penalty()) == 0.0
    with torch.no_grad():
        q[1].weight.copy_(ref + 2 * step)  # every weight two of its own steps away
    penalty = pull.penalty()
    assert float(penalty) == pytest.approx(0.5 * 4 * ref.numel(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(q[1].weight.grad, (2 * step / step ** 2).expand_as(ref), rtol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
def test_proximal_pull_settles_where_a_grid_step_is_worth_lambda(bits):
    """Adam with grid-scaled updates on a linear loss c.W plus the pull settles each weight at
    (W - W_p) / step = -c * step / lambda: a finer grid (8 bits) holds the weights closer."""
    from zaqbench.zaq.trust_region import GridScaledUpdates, ProximalPull

    q = _three_convs(bits)
    w = q[1].weight
    ref = w.detach().clone()
    step = weight_step(ref, q[1].weight_quant)
    c = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    four_bit = _three_convs(4)[1]  # the same weights (same seed) on the 4-bit grid
    step4 = weight_step(four_bit.weight.detach(), four_bit.weight_quant)
    lam = float((c.abs() * step4).median())  # one lambda: the median weight settles one step away at 4 bits
    pull, updates = ProximalPull(q), GridScaledUpdates(q)
    opt = torch.optim.Adam([w], lr=0.01)
    for _ in range(3000):
        opt.zero_grad()
        ((c * w).sum() + lam * pull.penalty()).backward()
        updates.remember()
        opt.step()
        updates.rescale()
    drift = ((w - ref) / step).detach()
    expected = -c * step / lam
    assert torch.allclose(drift, expected, atol=0.05)  # Adam hovers within about lr steps of it
    if bits == 8:  # the same lambda: 8-bit steps are about 17x smaller than 4-bit ones
        assert float(drift.abs().median()) < 0.1


def test_proximal_pull_needs_quantized_weights_only_and_is_checked():
    with pytest.raises(UserError, match="q_prox_weight"):
        ZAQConfig(q_prox_weight=1.0)
    with pytest.raises(UserError, match="methods.zaq.q_prox_weight="):
        ZAQConfig.from_dict({"q_prox_weight": -1.0, "q_params": "quantized-weights"})
    # off by default, and then not part of what is hashed (older rows keep their hashes)
    assert "q_prox_weight" not in ZAQConfig().to_dict()
    assert ZAQConfig(q_prox_weight=0.5, q_params="quantized-weights").to_dict()["q_prox_weight"] == 0.5


def test_trainer_with_proximal_pull_stays_closer_to_p(cls_adapter, tmp_path):
    drifts = {}
    for name, weight in (("free", 0.0), ("pulled", 1e3)):
        cfg = tiny_zaq(q_params="quantized-weights", q_optimizer="adam-grid", q_lr=0.5, q_prox_weight=weight)
        _, trainer = make_trainer(cls_adapter, tmp_path / name, cfg)
        trainer.run()
        drifts[name] = json.loads((tmp_path / name / "losses.jsonl").read_text().splitlines()[-1])["w_drift"]
    assert 0 < drifts["pulled"] < drifts["free"]
