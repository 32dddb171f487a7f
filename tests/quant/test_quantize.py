import pytest
import torch
import torchvision
from torch import nn

from tasks.models.resnet_cifar import resnet20
from zaqbench.errors import UserError
from zaqbench.quant import (
    FakeQuantizer, QConfig, QuantConv2d, QuantLinear, calibrate_activations, compute_layers, layer_coverage,
    quant_layers, quantizable_layers, quantize_model, set_quantization,
)
from zaqbench.quant.modules import QUANT_MODULES


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_at_most_two_pow_bits_levels(bits, symmetric):
    q = FakeQuantizer(bits, symmetric, range_rule="current")
    x = torch.linspace(-3, 5, 10_000)
    levels = torch.unique(q(x)).numel()
    assert levels <= 2**bits
    if not symmetric:  # an affine grid over [min, max] uses every level
        assert levels == 2**bits


def test_eight_bit_close_to_fp_and_four_bit_coarser():
    x = torch.randn(4096)
    err8 = (FakeQuantizer(8, False, range_rule="current")(x) - x).abs().max()
    err4 = (FakeQuantizer(4, False, range_rule="current")(x) - x).abs().max()
    span = x.max() - x.min()
    assert err8 <= span / 255 / 2 + 1e-6
    assert err4 > 4 * err8


def test_full_precision_bits_are_identity():
    x = torch.randn(100)
    assert torch.equal(FakeQuantizer(32, True, range_rule="current")(x), x)
    assert torch.equal(FakeQuantizer(16, False)(x), x)


def test_ste_gradient_inside_range_and_zero_outside():
    q = FakeQuantizer(4, False, range_rule="minmax")
    q.observe(torch.tensor([0.0, 1.0]))  # frozen range [0, 1]
    x = torch.tensor([-0.5, 0.2, 0.5, 0.9, 1.7], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_minmax_range_only_widens_and_ema_moves_both_ways():
    mm = FakeQuantizer(4, False, range_rule="minmax")
    mm.observing = True
    mm(torch.tensor([-1.0, 1.0]))
    mm(torch.tensor([-0.1, 0.1]))
    assert (mm.min_val.item(), mm.max_val.item()) == (-1.0, 1.0)
    ema = FakeQuantizer(4, False, range_rule="ema", momentum=0.5)
    ema.observing = True
    ema(torch.tensor([-1.0, 1.0]))
    ema(torch.tensor([-0.2, 0.2]))
    assert ema.max_val.item() == pytest.approx(0.6)


def test_per_channel_weight_ranges_are_per_channel():
    w = torch.stack([torch.linspace(-1, 1, 50), torch.linspace(-100, 100, 50)])
    per_ch = FakeQuantizer(4, True, per_channel=True, range_rule="current")(w)
    per_t = FakeQuantizer(4, True, per_channel=False, range_rule="current")(w)
    assert (per_ch[0] - w[0]).abs().max() < (per_t[0] - w[0]).abs().max()


@pytest.mark.parametrize("bits", [0, 1, 9, 12, 64])
def test_bad_bits_are_rejected(bits):
    with pytest.raises(UserError, match="2-8"):
        QConfig(wbits=bits)


@pytest.mark.parametrize("build", [resnet20, lambda: torchvision.models.resnet18(num_classes=10),
                                   lambda: torchvision.models.mobilenet_v2(num_classes=10)])
def test_quantize_model_keeps_names_and_state_dict(build):
    model = build().eval()
    qmodel, info = quantize_model(model, QConfig(wbits=4, abits=4))
    assert list(qmodel.state_dict()) == list(model.state_dict())
    assert [n for n, _ in qmodel.named_modules() if not n.endswith("_quant")] == \
        [n for n, _ in model.named_modules()]
    names = quantizable_layers(model)
    assert info["full_precision"] == [names[0], names[-1]]
    modules = dict(qmodel.named_modules())
    assert type(modules[names[0]]) in (nn.Conv2d, nn.Linear)
    assert type(modules[names[-1]]) in (nn.Conv2d, nn.Linear)
    assert all(isinstance(modules[n], (QuantConv2d, QuantLinear)) for n in info["quantized"])
    assert len(info["quantized"]) == len(names) - 2
    # the original model is untouched
    assert not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())


def test_quantized_model_changes_output_and_switch_turns_it_off():
    model = resnet20(in_channels=1).eval()
    x = torch.randn(4, 1, 28, 28)
    qmodel, _ = quantize_model(model, QConfig(wbits=2, abits=2))
    calibrate_activations(qmodel, [x])
    assert not torch.allclose(qmodel(x), model(x), atol=1e-3)
    set_quantization(qmodel, weight=False, act=False)
    assert torch.allclose(qmodel(x), model(x), atol=1e-5)


def test_fp_layer_patterns_and_unknown_pattern():
    model = resnet20()
    qmodel, info = quantize_model(model, QConfig(first_fp=False, last_fp=False, fp_layers=("layer3.*",)))
    assert "conv1" in info["quantized"] and "fc" in info["quantized"]
    assert all(n.startswith("layer3.") for n in info["full_precision"]) and info["full_precision"]
    with pytest.raises(UserError, match="matches no"):
        quantize_model(model, QConfig(fp_layers=("nope.*",)))


def test_bn_folding_preserves_fp_function():
    model = resnet20(in_channels=1)
    model.train()
    for _ in range(3):  # give BN non-trivial running statistics
        model(torch.randn(8, 1, 28, 28) * 2 + 1)
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    qmodel, info = quantize_model(model, QConfig(wbits=32, abits=32, bn_fold=True), example_input=x)
    assert len(info["bn_folded_pairs"]) == 21  # 19 convs + 2 shortcut convs each feed a BN
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())
    assert torch.allclose(qmodel(x), model(x), atol=1e-4)


def test_protocol_records_the_choices():
    proto = QConfig.from_dict({"preset": "zaq-code"}).protocol("gaussian-noise")
    assert proto == {"w_granularity": "per-channel", "w_symmetric": False, "a_symmetric": False,
                     "a_range": "minmax", "first_last_fp": "none", "bn_folded": False,
                     "calib_data": "gaussian-noise"}
    with pytest.raises(UserError, match="unknown quantization preset"):
        QConfig.from_dict({"preset": "bogus"})
    with pytest.raises(UserError, match=r"unknown option\(s\) \['wbit'\] in quant"):
        QConfig.from_dict({"wbit": 4})


def test_quant_layers_listed():
    qmodel, info = quantize_model(resnet20(), QConfig())
    assert [n for n, _ in quant_layers(qmodel)] == info["quantized"]


def test_eval_weight_cache_follows_weight_updates():
    qmodel, _ = quantize_model(resnet20(in_channels=1, width=4), QConfig(wbits=2, abits=8))
    x = torch.randn(2, 1, 16, 16)
    calibrate_activations(qmodel, [x])
    qmodel.eval()
    with torch.no_grad():
        first = qmodel(x)
        assert torch.equal(qmodel(x), first)
        for p in qmodel.parameters():
            p.mul_(1.5)  # in-place update, as an optimiser step does
        assert not torch.allclose(qmodel(x), first)
        cached = qmodel(x)
    assert torch.allclose(qmodel(x), cached)  # the grad path (no cache) agrees with the cached one
    with torch.no_grad():  # a replaced weight (not an in-place update) is noticed too
        for _, layer in quant_layers(qmodel):
            layer.weight = nn.Parameter(layer.weight.detach() * 0.5)
        assert not torch.allclose(qmodel(x), cached)


class SamePadConv(nn.Conv2d):
    """A conv whose forward pads first (as EfficientNet's ``Conv2dStaticSamePadding``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride)


def same_pad_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(SamePadConv(3, 8, 3), nn.ReLU(), SamePadConv(8, 8, 3), nn.ReLU(),
                         SamePadConv(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5)).eval()


def test_conv_subclass_with_own_forward_is_quantized_with_its_forward_kept():
    model = same_pad_net()
    x = torch.randn(4, 3, 12, 12)
    qmodel, info = quantize_model(model, QConfig(wbits=2, abits=8))
    assert info["quantized"] == ["2", "4"] and info["full_precision"] == ["0", "8"]
    modules = dict(qmodel.named_modules())
    assert isinstance(modules["2"], SamePadConv) and isinstance(modules["2"], tuple(QUANT_MODULES))
    assert list(qmodel.state_dict()) == list(model.state_dict())
    calibrate_activations(qmodel, [x])
    set_quantization(qmodel, weight=False, act=False)
    assert torch.allclose(qmodel(x), model(x), atol=1e-6)  # the padding forward is kept
    set_quantization(qmodel, weight=True, act=True)
    assert not torch.allclose(qmodel(x), model(x), atol=1e-3)  # and the 2-bit weight is used
    qmodel(x).sum().backward()
    assert modules["2"].weight.grad is not None and modules["2"].weight.grad.abs().sum() > 0
    assert isinstance(modules["2"].weight, nn.Parameter)  # the slot holds the parameter again
    assert layer_coverage(qmodel) == (["2", "4"], ["0", "8"])


@pytest.mark.parametrize("layer", [nn.Conv1d(4, 4, 1), nn.ConvTranspose2d(4, 4, 1), nn.MultiheadAttention(4, 1)])
def test_layer_that_cannot_be_quantized_is_refused_by_name(layer):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model.add_module("odd", layer)
    with pytest.raises(UserError, match=r"cannot be quantized \(odd\).*fp_layers"):
        quantize_model(model, QConfig(wbits=8, abits=8))
    _, info = quantize_model(model, QConfig(wbits=8, abits=8, fp_layers=("odd",)))
    assert info["quantized"] == ["1"] and "odd" in info["full_precision"]
    quantize_model(model, QConfig(wbits=32, abits=32))  # full precision rounds nothing: nothing to refuse
    assert "odd.out_proj" not in compute_layers(model)  # attention projections belong to the attention


def test_setting_that_quantizes_nothing_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(UserError, match="no layer would be quantized.*2 convolution/linear"):
        quantize_model(model, QConfig(wbits=8, abits=8))
    quantize_model(model, QConfig(wbits=32, abits=32))  # full precision asks for nothing
    _, info = quantize_model(model, QConfig(wbits=8, abits=8, last_fp=False))
    assert info["quantized"] == ["2"]


def observed(rule: str, batches: list[torch.Tensor]) -> FakeQuantizer:
    q = FakeQuantizer(4, False, range_rule=rule)
    q.observing = True
    for x in batches:
        q(x)
    q.observing = False
    return q


def test_percentile_range_ignores_a_lone_outlier_and_averages_batches():
    torch.manual_seed(0)
    batches = [torch.randn(100_000) for _ in range(3)]  # 99.99 %: the 10th largest of each
    batches[0][0] = 1000.0  # one outlier would stretch a min/max grid 250-fold
    q = observed("percentile", batches)
    assert -6 < float(q.min_val) < -1 and 1 < float(q.max_val) < 6
    clean = torch.randn(100_000)
    minmax = observed("minmax", batches)
    assert (q(clean) - clean).square().mean() < (minmax(clean) - clean).square().mean() / 10
    q.reset_range()
    assert q.batches_seen == 0 and not q.has_range


def test_mse_range_quantizes_heavy_tails_with_less_error_than_minmax():
    torch.manual_seed(0)
    batches = [torch.distributions.Laplace(0.0, 1.0).sample((50_000,)) for _ in range(3)]
    mse, minmax = observed("mse", batches), observed("minmax", batches)
    assert float(mse.max_val) < 0.8 * float(minmax.max_val) and float(mse.min_val) > 0.8 * float(minmax.min_val)
    x = torch.distributions.Laplace(0.0, 1.0).sample((50_000,))
    assert (mse(x) - x).square().mean() < 0.8 * (minmax(x) - x).square().mean()


def test_mse_range_is_the_least_error_clip():
    x = torch.cat([torch.randn(10_000), torch.tensor([40.0])])
    q = FakeQuantizer(3, True, range_rule="mse")
    lo, hi = q.batch_range(x)
    assert 0 < float(hi) < 40 * 0.5  # clipped well inside the outlier
    err = lambda h: (FakeQuantizer(3, True, range_rule="current").forward(torch.clamp(x, -h, h)) - x).square().sum()
    assert err(float(hi)) <= err(40.0)
