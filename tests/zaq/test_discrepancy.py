import copy

import pytest
import torch
import torch.nn.functional as F

from tasks.models.resnet_cifar import resnet20
from zaqbench.zaq.discrepancy import (
    _as_4d, activation_regularizer, channel_relation, feature_discrepancy, layer_weights, output_discrepancy,
    spatial_relation, spatial_relation_autograd,
)
from zaqbench.zaq.features import capture_features, flatten_tensors, forward_with_features
from zaqbench.zaq.generator import Generator
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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, chunk_elements", [
    ((5, 8, 8, 8), 2**18),  # the whole batch in one chunk
    ((5, 8, 8, 8), 2 * 64 * 64),  # chunks of 2 samples and a last one of 1
    ((3, 4, 12, 12), 1),  # one sample per chunk (a map larger than the budget)
    ((4, 3, 7, 5), 2**18),  # odd sizes
])
def test_chunked_spatial_relation_is_bit_identical_to_autograd(shape, chunk_elements, threads):
    """Values and gradients of the chunked spatial relation, with its hand-written backward, are
    bit for bit those of the one-graph autograd version, inside D_f as the engine uses it (the
    same features also feed the channel relation)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(sum(shape))
        q_raw = torch.randn(*shape, generator=g).relu().requires_grad_(True)
        p_raw = torch.randn(*shape, generator=g).requires_grad_(True)
        results = []
        for relation in (spatial_relation_autograd, lambda f: spatial_relation(f, chunk_elements)):
            q4, p4 = F.normalize(q_raw, dim=1), F.normalize(p_raw, dim=1)
            loss = F.l1_loss(relation(q4), relation(p4)) + F.l1_loss(channel_relation(q4), channel_relation(p4))
            results.append((loss, *torch.autograd.grad(loss, [q_raw, p_raw])))
    finally:
        torch.set_num_threads(previous)
    (loss_a, gq_a, gp_a), (loss_c, gq_c, gp_c) = results
    assert torch.equal(loss_a, loss_c) and torch.equal(gq_a, gq_c) and torch.equal(gp_a, gp_c)
    assert gq_a.abs().sum() > 0 and gp_a.abs().sum() > 0


def test_chunked_spatial_relation_without_grad_matches_and_keeps_no_graph():
    feat = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        out = spatial_relation(feat, 36 * 36)
    assert torch.equal(out, spatial_relation_autograd(feat)) and out.grad_fn is None


def test_maps_are_chunked_on_the_cpu_and_one_graph_elsewhere():
    cpu = spatial_relation(torch.randn(2, 3, 4, 4, requires_grad=True))
    meta = spatial_relation(torch.randn(2, 3, 4, 4, device="meta", requires_grad=True))
    assert "ChunkedSpatialRelation" in type(cpu.grad_fn).__name__
    assert meta.shape == (2, 3, 16) and type(meta.grad_fn).__name__ == "AddBackward0"
