import copy

import torch

from tasks.models.resnet_cifar import resnet20
from zaqbench.discrepancy import (
    _as_4d, activation_regularizer, feature_discrepancy, layer_weights, output_discrepancy,
)
from zaqbench.features import capture_features, flatten_tensors, forward_with_features
from zaqbench.generator import Generator
from zaqbench.adapter import InputSpec
from zaqbench.quant import QConfig, calibrate_activations, quantize_model

NAMES = ["layer1", "layer2", "layer3"]


def _pair():
    p = resnet20(in_channels=1, width=4).eval()
    q, _ = quantize_model(p, QConfig(wbits=2, abits=2, first_fp=False, last_fp=False))
    calibrate_activations(q, [torch.randn(8, 1, 16, 16)])
    return p, q


def _run(model, x):
    return forward_with_features(model, NAMES, lambda m, t: m(t), x)


def test_discrepancies_zero_when_q_equals_p():
    p = resnet20(in_channels=1, width=4).eval()
    x = torch.randn(4, 1, 16, 16)
    (po, pf), (qo, qf) = _run(p, x), _run(copy.deepcopy(p), x)
    assert output_discrepancy(qo, po).item() == 0
    assert feature_discrepancy(qf, pf).item() == 0


def test_discrepancies_positive_when_q_differs_and_reach_the_generator():
    p, q = _pair()
    g = Generator(InputSpec(1, 16, 16), nz=8, channels=16)
    x = g(torch.randn(4, 8))
    (po, pf), (qo, qf) = _run(p, x), _run(q, x)
    d_o, d_f = output_discrepancy(qo, po), feature_discrepancy(qf, pf)
    assert d_o.item() > 0 and d_f.item() > 0
    for loss in (d_o, d_f):
        g.zero_grad()
        loss.backward(retain_graph=True)
        assert g.project.weight.grad is not None and g.project.weight.grad.abs().sum() > 0


def test_output_discrepancy_handles_nested_outputs():
    a = {"cls": [torch.zeros(2, 3), torch.zeros(2, 5)], "reg": (torch.zeros(1),)}
    b = {"cls": [torch.ones(2, 3), torch.zeros(2, 5)], "reg": (torch.full((1,), 2.0),)}
    assert output_discrepancy(a, b).item() == (1 + 0 + 2) / 3
    assert len(flatten_tensors(a)) == 3


def test_large_maps_are_pooled_and_adaptive_weights_sum_to_layers():
    big = [torch.randn(1, 4, 64, 64)]
    assert _as_4d(big[0], 8).shape == (1, 4, 8, 8)
    assert _as_4d(torch.randn(1, 4, 6, 6), 8).shape == (1, 4, 6, 6)  # small maps are left alone
    assert feature_discrepancy(big, [t + 0.1 for t in big], pool_size=8).isfinite()
    w = layer_weights(torch.tensor([1.0, 3.0]), "adaptive")
    assert torch.allclose(w, torch.tensor([0.5, 1.5]))
    assert layer_weights(torch.tensor([1.0, 3.0]), "uniform").tolist() == [1.0, 1.0]


def test_activation_regularizer_is_mean_abs_of_last_map():
    assert activation_regularizer([torch.ones(1), torch.tensor([-2.0, 4.0])]).item() == 3.0


def test_hooks_are_removed_even_on_error():
    model = resnet20(in_channels=1, width=4)
    try:
        with capture_features(model, NAMES):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(not m._forward_hooks for m in model.modules())


def test_generator_sizes():
    for h, w in [(28, 28), (32, 32), (64, 128), (128, 128)]:
        g = Generator(InputSpec(3, h, w), nz=8, channels=16)
        assert g(torch.randn(2, 8)).shape == (2, 3, h, w)
