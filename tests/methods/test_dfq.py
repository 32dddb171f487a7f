"""DFQ: equalization keeps the function and equalizes ranges, bias absorption and correction
are exact where they should be, chains are found only where they are safe, and n/a is explicit."""
import csv
import json

import pytest
import torch
from torch import nn

from zaqbench.quant.equalization import (Chain, ChannelReLU6, absorb_high_bias, clipped_relu_mean, correct_bias, dfq_quantize,
                          equalize, find_chains, relu_mean)
from zaqbench.errors import UserError
from zaqbench.quant import QConfig, quantize_model
from zaqbench.run.runner import main


def randomize_bn(bn: nn.BatchNorm2d, g: torch.Generator) -> None:
    with torch.no_grad():
        c = bn.num_features
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))


def net(bn: bool = True) -> nn.Sequential:
    """conv -> (BN) -> ReLU -> conv -> (BN) -> ReLU -> conv, channels with very different scales."""
    g = torch.Generator().manual_seed(0)
    layers = [nn.Conv2d(3, 6, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(6)] if bn else []) + [nn.ReLU()]
    layers += [nn.Conv2d(6, 5, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(5)] if bn else []) + [nn.ReLU()]
    layers += [nn.Conv2d(5, 4, 1)]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.logspace(-2, 2, m.out_channels).reshape(-1, 1, 1, 1))
            if isinstance(m, nn.BatchNorm2d):
                randomize_bn(m, g)
    return model


def ranges(model: nn.Module, chain: Chain) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel range of conv1's BN-folded weights and of conv2's input-channel weights."""
    mods = dict(model.named_modules())
    w1 = mods[chain.conv1].weight
    if chain.bn:
        bn = mods[chain.bn]
        w1 = w1 * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    r1 = w1.abs().flatten(1).amax(1)
    r2 = mods[chain.conv2].weight.abs().transpose(0, 1).flatten(1).amax(1)
    return r1, r2


@pytest.mark.parametrize("bn", [True, False])
def test_equalization_keeps_outputs_and_equalizes_ranges(bn):
    model = net(bn)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    chains, searched, _ = equalize(model, iters=10, absorb=False)
    assert searched == ["(model)"]
    assert [(c.conv1, c.bn, c.conv2) for c in chains] == (
        [("0", "1", "3"), ("3", "4", "6")] if bn else [("0", None, "2"), ("2", None, "4")])
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    r1, r2 = ranges(model, chains[-1])  # the last chain was equalized last in each sweep: exact
    assert torch.allclose(r1, r2, rtol=1e-4)
    r1, r2 = ranges(net(bn), chains[-1])
    assert not torch.allclose(r1, r2, rtol=0.5)  # they were far apart before


def test_equalization_is_what_folded_quantization_sees():
    """With quant.bn_fold the folded conv1 of Q has the equalized per-channel ranges."""
    model = net(True)
    chains, _, _ = equalize(model, iters=10, absorb=False)
    q, info = quantize_model(model, QConfig(wbits=8, abits=8, bn_fold=True, first_fp=False, last_fp=False),
                             example_input=torch.zeros(1, 3, 8, 8))
    assert ("3", "4") in info["bn_folded_pairs"]
    folded_r1 = q[3].weight.abs().flatten(1).amax(1)
    assert torch.allclose(folded_r1, ranges(model, chains[1])[1], rtol=1e-4)


def test_chain_search_skips_shared_outputs_and_falls_back_to_submodules():
    class Residual(nn.Module):  # the ReLU output also feeds the sum: not equalizable
        def __init__(self):
            super().__init__()
            self.conv1, self.bn, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv1(x)))
            return self.conv2(y) + y

    class Untraceable(nn.Module):  # data-dependent control flow: fx cannot trace the whole
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1))
            self.res = Residual()

        def forward(self, x):
            y = self.body(x)
            return self.res(y) if y.sum() > 0 else y

    chains, searched = find_chains(Untraceable())
    assert searched == ["body", "res"]
    assert [(c.conv1, c.act, c.conv2) for c in chains] == [("body.0", "body.1", "body.2")]


def test_high_bias_absorption_is_exact_when_preactivations_stay_above_c():
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    with torch.no_grad():
        model[0].weight.mul_(0.01)  # BN output ~ its bias: well above beta - 3 gamma
        model[1].bias.copy_(torch.tensor([5.0, 0.1, 8.0]))
        model[1].weight.fill_(1.0)
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        before = model(x)
    chain = Chain("0", "1", "2", "3", relu=True)
    c = absorb_high_bias(dict(model.named_modules()), chain)
    assert torch.allclose(c, torch.tensor([2.0, 0.0, 5.0]))
    assert torch.allclose(model[1].bias, torch.tensor([3.0, 0.1, 3.0]))
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)


def test_relu_mean_matches_monte_carlo():
    mean, std = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, 3.0])
    y = torch.relu(mean + std * torch.randn(200_000, 3))
    assert torch.allclose(relu_mean(mean, std), y.mean(0), atol=0.02)


def test_bias_correction_removes_the_expected_weight_error():
    model = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1, bias=False)).eval()
    randomize_bn(model[0], torch.Generator().manual_seed(1))
    q, _ = quantize_model(model, QConfig(wbits=2, abits=32, first_fp=False, last_fp=False))
    bn = model[0]
    x = torch.relu(bn.bias + bn.weight.abs() * torch.randn(20_000, 6)).reshape(-1, 6, 1, 1)
    with torch.no_grad():
        ref = nn.functional.conv2d(x, model[2].weight)
        before = (q[2](x) - ref).mean(dim=(0, 2, 3)).abs()
        assert correct_bias(dict(q.named_modules()), Chain("x", "0", "1", "2", relu=True))
        after = (q[2](x) - ref).mean(dim=(0, 2, 3)).abs()
    assert before.max() > 0.05
    assert after.max() < 0.1 * before.max()


def mobilenet() -> nn.Module:
    """torchvision's MobileNetV2 at width 0.5 (stem 16 -> block 8: no residual around the first
    block), random weights and BN statistics far from identity (channel scales spread over
    orders of magnitude, many ReLU6 clips)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=5).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            randomize_bn(m, g)
            with torch.no_grad():
                m.weight.mul_(torch.logspace(-1, 1, m.num_features)[torch.randperm(m.num_features, generator=g)])
    return model


def test_mobilenet_v2_chains_run_through_relu6_and_depthwise_convs():
    chains, searched = find_chains(mobilenet())
    assert searched == ["(model)"]
    pairs = [(c.conv1, c.bn, c.act, c.conv2) for c in chains]
    # stem -> first depthwise; each expanding block: expand -> depthwise, depthwise -> project
    assert pairs[:3] == [("features.0.0", "features.0.1", "features.0.2", "features.1.conv.0.0"),
                         ("features.1.conv.0.0", "features.1.conv.0.1", "features.1.conv.0.2", "features.1.conv.1"),
                         ("features.2.conv.0.0", "features.2.conv.0.1", "features.2.conv.0.2", "features.2.conv.1.0")]
    assert ("features.2.conv.1.0", "features.2.conv.1.1", "features.2.conv.1.2", "features.2.conv.2") in pairs
    assert len(chains) == 2 + 2 * 16  # the project convs (no activation) start no chain
    assert not any(c.relu for c in chains)


def test_equalization_through_relu6_keeps_the_function_even_where_it_clips():
    model = mobilenet()
    x = torch.randn(2, 3, 32, 32)
    clipped = []
    hooks = [m.register_forward_hook(lambda m, i, o: clipped.append((o >= 6).float().mean().item()))
             for m in model.modules() if isinstance(m, nn.ReLU6)]
    with torch.no_grad():
        before = model(x)
    for h in hooks:
        h.remove()
    assert sum(c > 0.01 for c in clipped) > 10  # the ReLU6 clips are in play
    chains, _, _ = equalize(model, iters=5, absorb=False)
    clips = [m for m in model.modules() if isinstance(m, ChannelReLU6)]
    assert len(clips) == len(chains)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    with torch.no_grad():  # a fixed clip at 6 (ReLU6 kept, or ReLU in its place) would not be the same function
        for m in clips:
            m.ceiling.fill_(6.0)
        assert not torch.allclose(model(x), before, rtol=1e-2, atol=1e-2 * before.abs().max().item())


def test_equalization_through_depthwise_convs_equalizes_their_ranges():
    model = mobilenet()
    chains, _ = find_chains(model)
    spread = {}  # folded conv1 of each chain: mean channel range / largest (1 = per-tensor loses nothing)
    for when, m in (("before", model), ("after", model)):
        if when == "after":
            equalize(m, iters=20, absorb=False)
        spread[when] = torch.stack([(r1.mean() / r1.max()) for r1, _ in (ranges(m, c) for c in chains)])
    assert spread["after"].mean() > 2 * spread["before"].mean()
    assert (spread["after"] > spread["before"]).float().mean() > 0.9
    dw_project = chains[1]  # depthwise -> project, equalized after the chain before it in each sweep
    r1, r2 = ranges(model, dw_project)
    assert model.get_submodule(dw_project.conv1).groups == r1.numel()
    assert torch.allclose(r1, r2, rtol=1e-4)
    mods = dict(model.named_modules())
    for chain in chains:  # ceiling_i = 6 / s_i: the clip scaled with its channel
        clip = mods[chain.act]
        assert isinstance(clip, ChannelReLU6) and clip.ceiling.std() > 0


def test_high_bias_absorption_through_relu6_into_a_depthwise_conv():
    """Exact where pre-activations stay above c, including those clipped at the ceiling."""
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU6(),
                          nn.Conv2d(3, 3, 3, groups=3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(0.01)  # BN output ~ its bias
        model[1].bias.copy_(torch.tensor([5.0, 0.1, 8.0]))
        model[1].weight.fill_(1.0)
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        before = model(x)
    (chain,) = find_chains(model)[0]
    equalize(model, iters=1, absorb=False)  # the ReLU6 becomes per-channel
    mods = dict(model.named_modules())
    ceiling = mods["2"].ceiling.clone()
    c = absorb_high_bias(mods, chain)
    assert torch.allclose(c, torch.minimum(torch.tensor([2.0, 0.0, 5.0]) * ceiling / 6, ceiling))
    assert (c > 0).sum() == 2
    assert torch.allclose(mods["2"].ceiling, ceiling - c)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)


def test_clipped_relu_mean_matches_monte_carlo():
    mean, std = torch.tensor([-1.0, 0.0, 2.0, 7.0]), torch.tensor([0.5, 1.0, 3.0, 2.0])
    ceiling = torch.tensor([6.0, 1.0, 3.0, 6.0])
    y = torch.minimum(torch.relu(mean + std * torch.randn(200_000, 4)), ceiling)
    assert torch.allclose(clipped_relu_mean(mean, std, ceiling), y.mean(0), atol=0.02)


def test_bias_correction_of_a_depthwise_conv_after_relu6():
    model = nn.Sequential(nn.BatchNorm2d(6), ChannelReLU6(6), nn.Conv2d(6, 6, 3, groups=6, bias=False)).eval()
    randomize_bn(model[0], torch.Generator().manual_seed(1))
    with torch.no_grad():
        model[1].ceiling.copy_(torch.linspace(0.5, 6, 6))
    q, _ = quantize_model(model, QConfig(wbits=2, abits=32, first_fp=False, last_fp=False))
    bn = model[0]
    x = torch.minimum(torch.relu(bn.bias.reshape(1, -1, 1, 1) + bn.weight.abs().reshape(1, -1, 1, 1)
                                 * torch.randn(4000, 6, 3, 3)), model[1].ceiling.reshape(1, -1, 1, 1))
    with torch.no_grad():
        ref = nn.functional.conv2d(x, model[2].weight, groups=6)
        before = (q[2](x) - ref).mean(dim=(0, 2, 3)).abs()
        assert correct_bias(dict(q.named_modules()), Chain("x", "0", "1", "2", relu=False))
        after = (q[2](x) - ref).mean(dim=(0, 2, 3)).abs()
    assert before.max() > 0.05
    assert after.max() < 0.1 * before.max()


@pytest.mark.parametrize("a_placement", ["layer-input", "after-relu"])
def test_dfq_quantize_on_mobilenet_v2_keeps_p_and_the_clips(a_placement):
    """Q of the equalized model at full precision is P (the per-channel clips survive being wrapped
    by activation quantizers after ReLUs); P itself keeps its ReLU6 modules."""
    teacher = mobilenet()
    x = torch.randn(2, 3, 32, 32)
    qconfig = QConfig(wbits=32, abits=32, a_placement=a_placement)
    q, report = dfq_quantize(teacher, qconfig, x, absorb_bias=False)
    assert len(report.equalized) == 34 and report.bias_absorbed == 0
    assert not any(isinstance(m, ChannelReLU6) for m in teacher.modules())
    assert sum(isinstance(m, ChannelReLU6) for m in q.modules()) == 34
    with torch.no_grad():
        ref = teacher(x)
        assert torch.allclose(q(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_dfq_on_mobilenet_v2_shrinks_per_tensor_weight_error_and_corrects_depthwise_biases():
    teacher = mobilenet()
    x = torch.zeros(1, 3, 32, 32)
    qconfig = QConfig(wbits=8, abits=32, w_granularity="tensor", bn_fold=True)
    plain, info = quantize_model(teacher, qconfig, example_input=x)
    q, report = dfq_quantize(teacher, qconfig, x)
    assert report.bias_absorbed > 0
    assert "features.2.conv.1.0" in report.bias_corrected and "features.2.conv.2" in report.bias_corrected

    def relative_error(model: nn.Module, names: list[str]) -> torch.Tensor:
        """Mean over output channels of |Q(w) - w| / |w| of each (BN-folded) conv."""
        mods = dict(model.named_modules())
        return torch.stack([((m.weight_quant(m.weight) - m.weight).flatten(1).norm(dim=1)
                             / m.weight.flatten(1).norm(dim=1)).mean() for m in (mods[n] for n in names)])

    names = sorted({c[k] for c in report.equalized for k in ("conv1", "conv2")} & set(info["quantized"]))
    assert len(names) > 40
    with torch.no_grad():
        before, after = relative_error(plain, names), relative_error(q, names)
    assert after.mean() < 0.7 * before.mean()


TOY = ["--task", "toy", "--no-progress"]


def toy_args(tmp_path, config_dir, *extra):
    return [*TOY, "--config", str(config_dir / "toy_baselines_config.py"), "--out", str(tmp_path / "out.csv"),
            "--work-dir", str(tmp_path / "work"), *extra]


@pytest.fixture
def toy_env(tmp_path, monkeypatch):
    from pathlib import Path
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    return Path(__file__).parents[1] / "data"


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_dfq_on_the_toy_task_reports_its_chain(tmp_path, toy_env):
    assert main(toy_args(tmp_path, toy_env, "--methods", "dfq", "--bits", "8")) == 0
    (row,) = read(tmp_path / "out.csv")
    assert row["calib_data"] == "gaussian-noise+dfq" and float(row["value"]) > 60
    (report,) = (tmp_path / "work").rglob("dfq.json")
    equalized = json.loads(report.read_text())["equalized"]
    assert [(c["conv1"], c["bn"], c["conv2"]) for c in equalized] == [("0", "1", "3")]


def test_a_model_dfq_cannot_handle_gets_an_explicit_na_row(tmp_path, toy_env, capsys):
    assert main(toy_args(tmp_path, toy_env, "--methods", "dfq,dfq+zaq", "--bits", "4",
                         "--cfg-options", "task.arch=mlp", "quant.last_fp=False")) == 0
    written = read(tmp_path / "out.csv")
    assert [r["method"] for r in written] == ["dfq", "dfq+zaq"]
    for r in written:
        assert r["value"] == "nan"
        assert r["calib_data"].startswith("n/a: no conv(+BN)->ReLU->conv chain") and "," not in r["calib_data"]
    assert "n/a (no conv" in capsys.readouterr().err


def test_dfq_options_are_checked():
    from zaqbench.registry import build_method
    with pytest.raises(UserError, match="methods.dfq.eq_iters"):
        build_method("dfq", eq_iters=0)
    with pytest.raises(UserError, match="unknown option"):
        build_method("dfq+zaq", eq_iter=3)
