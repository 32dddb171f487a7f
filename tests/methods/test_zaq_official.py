"""The official ZAQ code, reproduced: the ``zaq-code`` quantizer options and the
``zaq-official`` loop, against reference computations written out here from the official
equations (independent of zaqbench's quantizer and engine code)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from tests.toy_task import ToyAdapter
from zaqbench.zaq.discrepancy import _as_4d, layer_discrepancies, zero_feature_vectors
from zaqbench.zaq.engine import DivergenceError, ZAQConfig, ZAQTrainer
from zaqbench.errors import UserError
from zaqbench.quant import (FakeQuantizer, QConfig, QuantReLU, act_quantizers, calibrate_activations,
                            load_quantizer_state, official_fake_quantize, quantize_model, quantizer_state)
import zaqbench.methods  # noqa: F401 - registers the methods
from zaqbench.registry import build_method

# -- the official equations, written out ------------------------------------------------------


def ref_quantize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Official asymmetric quantizer: s = (2^b - 1) / max(hi - lo, 1e-8), z = round(s lo) + 2^(b-1),
    value (clamp(round(s x - z), -2^(b-1), 2^(b-1) - 1) + z) / s; the gradient passes unchanged."""
    s = (2**bits - 1) / torch.clamp(hi - lo, min=1e-8)
    z = torch.round(s * lo) + 2 ** (bits - 1)
    q = torch.clamp(torch.round(s * x - z), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    value = (q + z) / s
    return x + (value - x).detach()


def ref_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per output channel, on the channel's own [min, max] (not widened to 0)."""
    flat = w.detach().reshape(w.shape[0], -1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return ref_quantize(w, flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape), bits)


class RefAct:
    """The official activation quantizer after a ReLU: range buffers start at 0 and widen on every
    forward (train or eval) before the batch is quantized."""

    def __init__(self) -> None:
        self.lo, self.hi = torch.zeros(()), torch.zeros(())

    def __call__(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        self.lo = torch.minimum(self.lo, x.detach().min())
        self.hi = torch.maximum(self.hi, x.detach().max())
        return ref_quantize(x, self.lo, self.hi, bits)


def ref_relation_loss(fq: torch.Tensor, fp: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """SCRM: channel-normalised features (norm clamped at 1e-12), spatial and channel attention."""
    def normalise(f):
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def spatial(f):
        x = f.flatten(2)
        att = torch.softmax(x.transpose(1, 2) @ x, dim=-1)
        return gamma * (x @ att.transpose(1, 2)) + x

    def channel(f):
        x = f.flatten(2)
        energy = x @ x.transpose(1, 2)
        att = torch.softmax(energy.max(-1, keepdim=True).values - energy, dim=-1)
        return gamma * (att @ x) + x

    q, p = normalise(fq), normalise(fp)
    return (spatial(q) - spatial(p)).abs().mean() + (channel(q) - channel(p)).abs().mean()


def toy_forward(params: dict, bn_state: dict, x: torch.Tensor, training: bool, acts=None, bits: int = 4):
    """The toy net (conv-BN-ReLU, conv(stride 2)-BN-ReLU, pool to 2x2, linear) written out; with
    ``acts`` it is Q: quantized weights, each ReLU output quantized by its RefAct, BN momentum 0.1."""
    wq = (lambda w: ref_weight(w, bits)) if acts else (lambda w: w)
    h = F.conv2d(x, wq(params["c1.w"]), params["c1.b"], padding=1)
    h = F.batch_norm(h, bn_state["bn1.mean"], bn_state["bn1.var"], params["bn1.w"], params["bn1.b"], training, 0.1)
    f1 = torch.relu(h)
    f1 = acts[0](f1, bits) if acts else f1
    h = F.conv2d(f1, wq(params["c2.w"]), params["c2.b"], padding=1, stride=2)
    h = F.batch_norm(h, bn_state["bn2.mean"], bn_state["bn2.var"], params["bn2.w"], params["bn2.b"], training, 0.1)
    f2 = torch.relu(h)
    f2 = acts[1](f2, bits) if acts else f2
    out = F.linear(F.adaptive_avg_pool2d(f2, 2).flatten(1), wq(params["fc.w"]), params["fc.b"])
    return out, [f1, f2]


TOY_KEYS = {"c1.w": "0.weight", "c1.b": "0.bias", "bn1.w": "1.weight", "bn1.b": "1.bias",
            "c2.w": "3.weight", "c2.b": "3.bias", "bn2.w": "4.weight", "bn2.b": "4.bias",
            "fc.w": "8.weight", "fc.b": "8.bias"}
TOY_BUFFERS = {"bn1.mean": "1.running_mean", "bn1.var": "1.running_var",
               "bn2.mean": "4.running_mean", "bn2.var": "4.running_var"}


def toy(tmp_path, width: int = 16) -> tuple[ToyAdapter, torch.nn.Module]:
    adapter = ToyAdapter(Config(dict(task=dict(type="toy", width=width))), "toy", None, tmp_path, torch.device("cpu"))
    torch.manual_seed(0)
    teacher = adapter.build_model()
    adapter.train_teacher(teacher)
    return adapter, teacher.eval()


def official_trainer(adapter, teacher, tmp_path, **kw) -> ZAQTrainer:
    qconfig = QConfig.from_dict({"preset": "zaq-code"}).with_bits(4, 4)
    qmodel, _ = quantize_model(teacher, qconfig)
    method = build_method("zaq-official", iters=1, q_steps=2, batch_size=8, nz=8, generator_channels=8,
                          calib_batches=1, checkpoint_interval=1, **kw)
    torch.manual_seed(0)
    return ZAQTrainer(adapter, copy.deepcopy(teacher), qmodel, method.zaq_config(), tmp_path / "run", seed=3,
                      progress=False)


# -- one official iteration, pinned --------------------------------------------------------------


def test_one_official_iteration_matches_the_official_equations(tmp_path):
    """Calibration pass, two Q steps (SGD, momentum 0.9, weight decay 5e-4, BN in train mode,
    ranges widening on every forward), one G step (Adam): Q's weights, BN statistics and ranges,
    G's weights and both losses equal the hand computation."""
    adapter, teacher = toy(tmp_path)
    trainer = official_trainer(adapter, teacher, tmp_path)
    cfg = trainer.cfg
    assert (cfg.act_ranges, cfg.relation_guard, cfg.recalibrate_at_end) == ("every-forward", "exact", False)
    gen = copy.deepcopy(trainer.generator)  # its initial weights; the reference updates this copy
    g_initial = [p.detach().clone() for p in gen.parameters()]
    p_params = {k: teacher.state_dict()[v].clone() for k, v in TOY_KEYS.items()}
    p_bn = {k: teacher.state_dict()[v].clone() for k, v in TOY_BUFFERS.items()}
    q_params = {k: v.clone().requires_grad_(True) for k, v in p_params.items()}
    q_bn = {k: v.clone() for k, v in p_bn.items()}
    acts = [RefAct(), RefAct()]
    rng = torch.Generator().manual_seed(3)

    def draw():
        return torch.randn(cfg.batch_size, cfg.nz, generator=rng)

    with torch.no_grad():  # range initialisation: one generated batch through Q in eval mode
        toy_forward(q_params, q_bn, gen(draw()), training=False, acts=acts)

    momentum_buf: dict[str, torch.Tensor] = {}
    for _ in range(cfg.q_steps):
        with torch.no_grad():
            x = gen(draw())
            p_out, p_feats = toy_forward(p_params, p_bn, x, training=False)
        q_out, q_feats = toy_forward(q_params, q_bn, x, training=True, acts=acts)
        assert all(int((f.norm(dim=1) == 0).sum()) == 0 for f in q_feats)  # the clamp is not hit here
        loss_q = (q_out - p_out).abs().mean() + cfg.alpha * sum(map(ref_relation_loss, q_feats, p_feats))
        grads = torch.autograd.grad(loss_q, list(q_params.values()))
        with torch.no_grad():
            for (name, p), g in zip(q_params.items(), grads):
                d = g + cfg.q_weight_decay * p
                momentum_buf[name] = d if name not in momentum_buf else cfg.q_momentum * momentum_buf[name] + d
                p -= cfg.q_lr * momentum_buf[name]

    x = gen(draw())
    p_out, p_feats = toy_forward(p_params, p_bn, x, training=False)
    q_out, q_feats = toy_forward(q_params, q_bn, x, training=True, acts=acts)
    loss_g = -(q_out - p_out).abs().mean() - cfg.alpha * sum(map(ref_relation_loss, q_feats, p_feats)) \
        - cfg.beta * p_feats[-1].abs().mean()
    g_grads = torch.autograd.grad(loss_g, list(gen.parameters()))
    with torch.no_grad():  # Adam's first step: p -= lr * g / (|g| + eps)
        for p, g in zip(gen.parameters(), g_grads):
            p -= cfg.g_lr * g / (g.abs() + 1e-8)

    trainer.calibrate(cfg.calib_batches)
    losses = trainer.step()

    assert losses["loss_q"] == pytest.approx(float(loss_q), rel=1e-5)
    assert losses["loss_g"] == pytest.approx(float(loss_g), rel=1e-5)
    state = trainer.qmodel.state_dict()
    for name, key in TOY_KEYS.items():
        assert torch.allclose(state[key], q_params[name].detach(), atol=1e-6, rtol=1e-5), name
        assert not torch.equal(state[key], p_params[name]), name  # Q moved
    for name, key in TOY_BUFFERS.items():
        assert torch.allclose(state[key], q_bn[name], atol=1e-6, rtol=1e-5), name
    ranges = quantizer_state(trainer.qmodel)
    for i, (name, _) in enumerate(act_quantizers(trainer.qmodel)):
        lo, hi = ranges[f"{name}.act_quant.min_val"], ranges[f"{name}.act_quant.max_val"]
        assert torch.clamp(lo, max=0) == pytest.approx(float(acts[i].lo), abs=1e-6)
        assert hi == pytest.approx(float(acts[i].hi), rel=1e-6)
    # Adam's first step moves each weight by lr * sign(g): where g is ~0 (conv biases before BN in
    # train mode) its sign is float noise, so those weights are only checked to move by <= lr
    conditioned = 0
    for (name, got), want, g, before in zip(trainer.generator.named_parameters(), gen.parameters(), g_grads,
                                            g_initial):
        clear = g.abs() > 1e-6
        conditioned += int(clear.sum())
        assert torch.allclose(got[clear], want[clear], atol=1e-6), name
        assert float((got - before).abs().max()) <= cfg.g_lr * (1 + 1e-4), name
    assert conditioned > 0.9 * sum(p.numel() for p in gen.parameters())


def test_exact_guard_stops_with_the_official_blow_up(tmp_path):
    """All-zero feature vectors of Q: 'exact' takes the official step (gradient scaled by 1e12) and
    says so; 'safe' trains on with finite gradients and the same loss value."""
    adapter, teacher = toy(tmp_path, width=4)  # 4 channels: some positions quantize to all zeros
    trainer = official_trainer(adapter, teacher, tmp_path)
    with pytest.raises(DivergenceError) as err:
        trainer.run()
    msg = str(err.value)
    assert "iteration 1 (Q step 1)" in msg and "all-zero vectors" in msg and "relation_guard='safe'" in msg
    largest = float(msg.split("largest |gradient| ")[1].split(")")[0])
    assert largest > 1e6

    safe = official_trainer(adapter, teacher, tmp_path / "safe", relation_guard="safe")
    safe.run()
    grads = [float(p.grad.abs().max()) for p in safe.qmodel.parameters() if p.grad is not None]
    assert grads and max(grads) < 1e3  # the last Q step's gradient
    assert all(torch.isfinite(p).all() for p in safe.qmodel.parameters())


# -- the quantizer options ------------------------------------------------------------------------


def test_official_rounding_differs_at_half_steps_when_the_zero_point_is_odd():
    """Range [-1, 2], 2 bits: one level per unit, zero point 1 (odd). 0.5 is a half step: the
    official code computes round(0.5 - 1) = -0 -> (0 + 1) / 1 = 1; torch rounds 0.5 to 0 first -> 0.
    Likewise 1.5: official round(0.5) = 0 -> 1; torch round(1.5) = 2 -> 2."""
    x = torch.tensor([0.5, 1.5, -0.7, 2.2])
    lo, hi = torch.tensor(-1.0), torch.tensor(2.0)
    assert official_fake_quantize(x, lo, hi, 2).tolist() == [1.0, 1.0, -1.0, 2.0]
    q = FakeQuantizer(2, symmetric=False, range_rule="minmax")
    q.min_val.fill_(-1.0)
    q.max_val.fill_(2.0)
    assert q(x).tolist() == [0.0, 2.0, -1.0, 2.0]
    q.rounding = "after-zero-point"
    assert q(x).tolist() == [1.0, 1.0, -1.0, 2.0]


def test_weight_range_minmax_keeps_a_channel_own_range():
    """A channel whose weights are all positive (official arithmetic, 4 bits). Widened to [0, 1]:
    s = 15, z = 8, so 0.5 -> round(7.5 - 8) = -0 -> 8/15 and 0.51 -> round(-0.35) = 0 -> 8/15. On its
    own [0.5, 1]: s = 30, z = round(15) + 8 = 23, so 0.5 -> -8 -> 15/30 and 0.51 -> round(-7.7) = -8 -> 0.5."""
    w = torch.tensor([[0.5, 0.51, 1.0], [-1.0, 0.0, 1.0]])
    widened = FakeQuantizer(4, symmetric=False, per_channel=True, range_rule="current", rounding="after-zero-point")
    own = FakeQuantizer(4, symmetric=False, per_channel=True, range_rule="current", include_zero=False,
                        rounding="after-zero-point")
    assert widened(w)[0].tolist() == pytest.approx([8 / 15, 8 / 15, 1.0], abs=1e-6)
    assert own(w)[0].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-6)
    assert torch.allclose(widened(w)[1], own(w)[1])
    with pytest.raises(UserError, match="w_range='minmax' needs"):
        QConfig(w_symmetric=False, w_range="minmax")


@pytest.mark.parametrize("rounding", ["before-zero-point", "after-zero-point"])
def test_identity_ste_passes_gradients_outside_the_range(rounding):
    x = torch.tensor([-3.0, 0.3, 5.0], requires_grad=True)
    grads = {}
    for ste in ("clipped", "identity"):
        q = FakeQuantizer(4, symmetric=False, range_rule="minmax", rounding=rounding, ste=ste)
        q.min_val.fill_(0.0)
        q.max_val.fill_(1.0)
        (g,) = torch.autograd.grad((q(x) * torch.tensor([1.0, 2.0, 3.0])).sum(), x)
        grads[ste] = g.tolist()
    assert grads == {"clipped": [0.0, 2.0, 0.0], "identity": [1.0, 2.0, 3.0]}


def test_after_relu_placement_on_resnet20():
    """One quantizer per ReLU module (the block's is called twice and shares it), none on the image
    or at conv/linear inputs; the stage output is quantized (D_f sees quantized features)."""
    from tasks.models.resnet_cifar import resnet20

    torch.manual_seed(0)
    model = resnet20(num_classes=10, in_channels=3, width=4).eval()
    qmodel, info = quantize_model(model, QConfig.from_dict({"preset": "zaq-code"}).with_bits(4, 4))
    names = [n for n, _ in act_quantizers(qmodel)]
    assert names == ["relu"] + [f"layer{s}.{b}.relu" for s in (1, 2, 3) for b in range(3)] == info["quantized_relus"]
    assert all(m.act_quant is None for n, m in qmodel.named_modules() if hasattr(m, "weight_quant"))
    assert "conv1" in info["quantized"] and "fc" in info["quantized"]  # first and last layer quantized
    calls = []
    block = qmodel.layer1[0]
    handle = block.relu.act_quant.register_forward_hook(lambda *a: calls.append(1))
    try:
        calibrate_activations(qmodel, [torch.randn(2, 3, 8, 8)])
    finally:
        handle.remove()
    assert len(calls) == 2 and isinstance(block.relu, QuantReLU)
    feats = {}
    handle = qmodel.layer1.register_forward_hook(lambda m, i, o: feats.setdefault("layer1", o))
    try:
        qmodel(torch.randn(2, 3, 8, 8))
    finally:
        handle.remove()
    quantizer = qmodel.layer1[2].relu.act_quant
    step = (quantizer.max_val - torch.clamp(quantizer.min_val, max=0)) / 15
    levels = feats["layer1"] / step
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # on the 4-bit grid
    state = quantizer_state(qmodel)
    assert "layer1.0.relu.act_quant.min_val" in state
    other, _ = quantize_model(model, QConfig.from_dict({"preset": "zaq-code"}).with_bits(4, 4))
    load_quantizer_state(other, state)
    assert torch.equal(other.layer1[0].relu.act_quant.max_val, block.relu.act_quant.max_val)


def test_after_relu_needs_relu_modules():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.GELU(), torch.nn.Conv2d(2, 2, 3))
    with pytest.raises(UserError, match="no nn.ReLU"):
        quantize_model(model, QConfig(a_placement="after-relu", first_fp=False))


def test_bad_quant_options_are_one_line():
    with pytest.raises(UserError, match="quant.a_placement='before-relu' is not valid"):
        QConfig(a_placement="before-relu")
    with pytest.raises(UserError, match="asymmetric"):
        QConfig(rounding="after-zero-point")  # the default weights are symmetric
    with pytest.raises(UserError, match="relation_guard"):
        ZAQConfig(relation_guard="off")


# -- the relation loss's guard ----------------------------------------------------------------------


def test_safe_guard_same_loss_no_blow_up():
    q = torch.rand(2, 3, 4, 4)
    q[0, :, 1, 2] = 0.0  # one all-zero vector
    p = torch.rand(2, 3, 4, 4)
    assert zero_feature_vectors([q, p]) == [1, 0]
    grads = {}
    for guard in ("clamp", "safe"):
        x = q.clone().requires_grad_(True)
        loss = layer_discrepancies([x], [p], guard=guard).sum()
        grads[guard] = (float(loss), torch.autograd.grad(loss, x)[0])
    assert grads["clamp"][0] == pytest.approx(grads["safe"][0], rel=1e-6)
    assert float(grads["clamp"][1][0, :, 1, 2].abs().max()) > 1e6  # the official blow-up
    assert float(grads["safe"][1][0, :, 1, 2].abs().max()) == 0.0
    mask = torch.ones_like(q, dtype=torch.bool)
    mask[0, :, 1, 2] = False
    assert torch.allclose(grads["clamp"][1][mask], grads["safe"][1][mask], atol=1e-6)
    assert torch.equal(_as_4d(q, 32, "safe"), _as_4d(q, 32))


# -- hashes and settings ------------------------------------------------------------------------------


def test_new_options_at_their_defaults_leave_hashed_dicts_alone():
    assert set(QConfig().to_dict()) == {"wbits", "abits", "w_granularity", "w_symmetric", "a_symmetric", "a_range",
                                        "a_momentum", "first_fp", "last_fp", "fp_layers", "bn_fold"}
    code = QConfig.from_dict({"preset": "zaq-code"})
    assert code.to_dict()["a_placement"] == "after-relu" and code.extra_settings() == {
        "a_placement": "after-relu", "ste": "identity", "w_range": "minmax", "rounding": "after-zero-point"}
    zaq = build_method("zaq")
    assert "act_ranges" not in zaq.cfg and "relation_guard" not in zaq.settings()
    official = build_method("zaq-official", relation_guard="safe")
    assert official.cfg["act_ranges"] == "every-forward" and official.settings()["relation_guard"] == "safe"
    assert official.zaq_config().recalibrate_at_end is False
