import pytest
import torch
import torchvision
from torch import nn

from tasks.models.resnet_cifar import resnet20
from zaqbench.errors import UserError
from zaqbench.quant import (
    FakeQuantizer, QConfig, QuantConv2d, QuantLinear, calibrate_activations, quant_layers,
    quantizable_layers, quantize_model, set_quantization,
)


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
    with pytest.raises(UserError, match="unknown quant option"):
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
