"""DFQ: data-free quantization through weight equalization and bias correction
(Nagel et al., ICCV 2019). No data, no training.

1. **Cross-layer equalization** of every chain conv1 (+BN) -> ReLU -> conv2 in which
   each tensor feeds only the next layer. ReLU is positively homogeneous, so
   scaling output channel i of conv1 (+BN) by 1/s_i and input channel i of conv2
   by s_i leaves the function unchanged; s_i = sqrt(r1_i / r2_i) makes both
   per-channel weight ranges sqrt(r1_i * r2_i). r1 is the range of conv1's
   *BN-folded* weights (as in the paper), so the result is the same whether Q
   folds BN (``quant.bn_fold``) or not: without folding the 1/s_i goes into the
   BN's affine parameters, with folding ``quantize_model`` folds it into conv1.
   Either conv may be depthwise (output channel i reads only input channel i), so
   MobileNet's expand 1x1 -> depthwise 3x3 -> project 1x1 gives two chains.
2. **High-bias absorption**: BN's output of channel i is ~N(beta_i, gamma_i^2);
   c_i = max(0, beta_i - 3 |gamma_i|) is subtracted before the ReLU and added back
   through conv2's bias (exact except where conv2's zero padding is read).
3. **Analytical bias correction** after quantization: conv2's expected output
   error (W_q - W) E[x] is removed from its bias, with E[x] = E[ReLU(N(beta, gamma^2))]
   from the preceding BN.

**ReLU6.** min(max(x, 0), 6) is not positively homogeneous: after scaling by 1/s_i
the clip would have to sit at 6/s_i. The paper replaces ReLU6 by ReLU before
equalizing, which changes the FP function wherever an activation exceeds 6. Here
each equalized ReLU6 becomes a :class:`ChannelReLU6` whose per-channel ceiling
follows the scales (6/s_i; 6/s_i - c_i after bias absorption), so the equalized
model computes exactly what P computes, clipping included, and ``dfq`` - ``ptq``
stays what equalization and bias correction buy, not a change of activation.
E[x] for bias correction is then that of the clipped Gaussian.

Chains are found on the torch.fx graph of the model; a model (OpenMMLab
detectors and segmentors) that does not trace as a whole is searched module by
module, each submodule that traces contributing the chains inside it.
"""
from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UserError
from .qconfig import QConfig
from .quantize import quantize_model
from .bn_fold import bn_scale

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)  # positively homogeneous: f(x / s) = f(x) / s for s > 0
ACTIVATION_FUNCTIONS = (F.relu, torch.relu)
CLIPPED_ACTIVATIONS = (nn.ReLU6,)  # homogeneous once the clip scales with the channel (ChannelReLU6)


class ChannelReLU6(nn.ReLU6):
    """min(max(x, 0), ceiling_i) on channel i: ReLU6 carried through cross-layer equalization.

    A ReLU6 subclass, so whatever treats ReLU6 modules (activation quantization placed
    after ReLUs) treats this one alike; the ceiling is a buffer, so it follows the model
    across devices and copies."""

    def __init__(self, channels: int, ceiling: float = 6.0, inplace: bool = False) -> None:
        super().__init__(inplace=inplace)
        self.register_buffer("ceiling", torch.full((channels,), float(ceiling)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ceiling = self.ceiling.reshape(1, -1, *([1] * (x.dim() - 2)))
        return torch.minimum(torch.relu(x), ceiling)

    def extra_repr(self) -> str:
        return f"channels={self.ceiling.numel()}"


@dataclass
class Chain:
    """conv1 (+bn) -> activation -> conv2, by module names in the model."""

    conv1: str
    bn: str | None
    act: str
    conv2: str
    relu: bool  # the activation is a ReLU (its E[x] formula); ReLU6 chains say False and find their clip by `act`


class NotApplicable(UserError):
    """DFQ cannot handle this model; the reason goes into the result row as an n/a cell."""


class _LeafTracer(fx.Tracer):
    """Convs, norms and activations are leaves whatever package defines them (mmcv's
    wrapped Conv2d checks empty batches with Python control flow that cannot trace)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm) + ACTIVATIONS + CLIPPED_ACTIVATIONS):
            return True
        return super().is_leaf_module(m, qualname)


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_depthwise(conv: nn.Conv2d) -> bool:
    """Output channel i reads input channel i only (one filter per channel)."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _chains_in_graph(root: nn.Module, prefix: str) -> list[Chain]:
    graph = _LeafTracer().trace(root)
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def module(node: fx.Node | None) -> nn.Module | None:
        return modules.get(node.target) if node is not None and node.op == "call_module" else None

    def full(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    chains = []
    for node in graph.nodes:
        conv1 = module(node)
        if not isinstance(conv1, nn.Conv2d) or calls[node.target] != 1:
            continue
        nxt, bn_name = _only_user(node), None
        if isinstance(module(nxt), nn.modules.batchnorm._BatchNorm):
            if calls[nxt.target] != 1:
                continue
            bn_name, nxt = nxt.target, _only_user(nxt)
        if nxt is None:
            continue
        if isinstance(module(nxt), ACTIVATIONS):
            act_name, relu = nxt.target, isinstance(module(nxt), nn.ReLU)
        elif isinstance(module(nxt), CLIPPED_ACTIVATIONS) and calls[nxt.target] == 1:
            act_name, relu = nxt.target, False  # its ceiling becomes per-channel: one call only
        elif nxt.op == "call_function" and nxt.target in ACTIVATION_FUNCTIONS:
            act_name, relu = f"{nxt.target.__name__}()", True
        else:
            continue
        conv2_node = _only_user(nxt)
        conv2 = module(conv2_node)
        if isinstance(conv2, nn.Conv2d) and (conv2.groups == 1 or _is_depthwise(conv2)) and \
                (conv1.groups == 1 or _is_depthwise(conv1)) and \
                calls[conv2_node.target] == 1 and conv2.in_channels == conv1.out_channels:
            chains.append(Chain(full(node.target), full(bn_name) if bn_name else None, full(act_name),
                                full(conv2_node.target), relu))
    return chains


def find_chains(model: nn.Module) -> tuple[list[Chain], list[str]]:
    """All equalizable chains, and the names of the (sub)modules whose graphs were searched."""
    def search(root: nn.Module, prefix: str) -> tuple[list[Chain], list[str]]:
        try:
            return _chains_in_graph(root, prefix), [prefix or "(model)"]
        except Exception:  # noqa: BLE001 - any tracing failure: search the children instead
            chains: list[Chain] = []
            traced: list[str] = []
            for name, child in root.named_children():
                c, t = search(child, f"{prefix}.{name}" if prefix else name)
                chains += c
                traced += t
            return chains, traced

    return search(model, "")


def _folded_scale(bn: nn.Module | None, channels: int, ref: torch.Tensor) -> torch.Tensor:
    """gamma / sigma of the BN (ones without one): what folding multiplies conv1's rows by."""
    return torch.ones(channels, device=ref.device) if bn is None else bn_scale(bn)


def _input_ranges(conv: nn.Conv2d) -> torch.Tensor:
    """max |w| over the weights that read each input channel, (C_in,)."""
    w = conv.weight.abs()
    return (w if _is_depthwise(conv) else w.transpose(0, 1)).flatten(1).amax(1)


def _scale_inputs(conv: nn.Conv2d, s: torch.Tensor) -> None:
    """Multiply the weights that read input channel i by s_i, in place."""
    conv.weight.mul_(s.reshape(-1, 1, 1, 1) if _is_depthwise(conv) else s.reshape(1, -1, 1, 1))


def _input_sums(conv: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in) sums of ``weight`` (shaped like conv's) over each kernel: the output
    change per unit of a constant shift of each input channel (away from zero padding)."""
    if _is_depthwise(conv):
        return torch.diag(weight.sum(dim=(1, 2, 3)))
    return weight.sum(dim=(2, 3))


def _clip(modules: dict[str, nn.Module], chain: Chain) -> ChannelReLU6 | None:
    act = modules.get(chain.act)
    return act if isinstance(act, ChannelReLU6) else None


@torch.no_grad()
def per_channel_relu6(model: nn.Module, chains: list[Chain]) -> list[str]:
    """Replace each chain's ReLU6 by a :class:`ChannelReLU6` with the same clip, in place
    (the same function until equalization scales the ceilings); returns their names."""
    modules = dict(model.named_modules())
    replaced = []
    for chain in chains:
        act = modules.get(chain.act)
        if isinstance(act, CLIPPED_ACTIVATIONS) and not isinstance(act, ChannelReLU6):
            parent, _, attr = chain.act.rpartition(".")
            conv1 = modules[chain.conv1]
            clip = ChannelReLU6(conv1.out_channels, act.max_val).to(conv1.weight)
            setattr(model.get_submodule(parent) if parent else model, attr, clip)
            replaced.append(chain.act)
    return replaced


def restore_channel_relu6(model: nn.Module, channels: dict[str, int]) -> None:
    """Turn each ReLU6 named in ``channels`` into a :class:`ChannelReLU6` with that many channels,
    in place, so a state dict written after equalization (with ``<name>.ceiling``) loads onto a
    freshly built model."""
    modules = dict(model.named_modules())
    for name, count in channels.items():
        relu = modules.get(name)
        if isinstance(relu, nn.ReLU6) and not isinstance(relu, ChannelReLU6):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, ChannelReLU6(count, inplace=relu.inplace))


@torch.no_grad()
def equalize_chain(modules: dict[str, nn.Module], chain: Chain) -> torch.Tensor:
    """One equalization step of a chain in place; returns the scales s (C,)."""
    conv1, conv2 = modules[chain.conv1], modules[chain.conv2]
    bn = modules[chain.bn] if chain.bn else None
    folded = conv1.weight * _folded_scale(bn, conv1.out_channels, conv1.weight).reshape(-1, 1, 1, 1)
    r1 = folded.abs().flatten(1).amax(1)
    r2 = _input_ranges(conv2)
    s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-30)), torch.ones_like(r1))
    if bn is not None:  # BN normalises conv1's scale away: the 1/s goes into its affine output
        if not bn.affine:
            raise NotApplicable(f"BN '{chain.bn}' has no affine parameters to carry the equalization")
        bn.weight.div_(s)
        bn.bias.div_(s)
    else:
        conv1.weight.div_(s.reshape(-1, 1, 1, 1))
        if conv1.bias is not None:
            conv1.bias.div_(s)
    clip = _clip(modules, chain)
    if clip is not None:
        clip.ceiling.div_(s)
    _scale_inputs(conv2, s)
    return s


def _add_bias(conv: nn.Conv2d, delta: torch.Tensor) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device),
                                 requires_grad=conv.weight.requires_grad)
    conv.bias.data.add_(delta)


@torch.no_grad()
def absorb_high_bias(modules: dict[str, nn.Module], chain: Chain, n_sigma: float = 3.0) -> torch.Tensor:
    """Move c = max(0, beta - n_sigma |gamma|) from the BN's output into conv2's bias (ReLU and
    ReLU6 chains). Through a clip at u, c <= u and the ceiling drops to u - c:
    min(max(x - c, 0), u - c) + c = min(max(x, 0), u) wherever x >= c."""
    bn, conv2 = modules[chain.bn], modules[chain.conv2]
    clip = _clip(modules, chain)
    if not chain.relu and clip is None:
        return torch.zeros_like(bn.bias)  # LeakyReLU(x - c) != LeakyReLU(x) - c below 0
    c = (bn.bias - n_sigma * bn.weight.abs()).clamp_min(0)
    if clip is not None:
        c = torch.minimum(c, clip.ceiling)
        clip.ceiling.sub_(c)
    bn.bias.sub_(c)
    _add_bias(conv2, _input_sums(conv2, conv2.weight) @ c)
    return c


def relu_mean(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[ReLU(y)] for y ~ N(mean, std^2): mean * Phi(mean/std) + std * phi(mean/std)."""
    std = std.clamp_min(1e-12)
    t = mean / std
    cdf = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    return mean * cdf + std * pdf


def clipped_relu_mean(mean: torch.Tensor, std: torch.Tensor, ceiling: torch.Tensor) -> torch.Tensor:
    """E[min(max(y, 0), u)] for y ~ N(mean, std^2): the clip is ReLU(y) - ReLU(y - u)."""
    return relu_mean(mean, std) - relu_mean(mean - ceiling, std)


@torch.no_grad()
def correct_bias(qmodules: dict[str, nn.Module], chain: Chain) -> bool:
    """Remove conv2's expected weight-quantization error (W_q - W) E[x] from its bias, with
    E[x] from the BN before the ReLU (or ReLU6). False if conv2 is not quantized, the chain has
    no BN, or its activation has no E[x] formula here."""
    conv2 = qmodules[chain.conv2]
    if chain.bn is None or not hasattr(conv2, "weight_quant") or not conv2.weight_quant.active:
        return False
    clip = _clip(qmodules, chain)
    if not chain.relu and clip is None:
        return False
    bn = qmodules[chain.bn]
    if clip is None:
        expected = relu_mean(bn.bias, bn.weight.abs())  # (C_in,)
    else:
        expected = clipped_relu_mean(bn.bias, bn.weight.abs(), clip.ceiling)
    error = conv2.weight_quant(conv2.weight) - conv2.weight  # shaped like conv2's weight
    _add_bias(conv2, -(_input_sums(conv2, error) @ expected))
    return True


@dataclass
class DFQReport:
    searched: list[str]
    equalized: list[dict[str, Any]]
    bias_absorbed: int
    bias_corrected: list[str]

    def summary(self) -> str:
        pairs = ", ".join(f"{c['conv1']}->{c['conv2']}" for c in self.equalized)
        return (f"[dfq] equalized {len(self.equalized)} pair(s): {pairs}; high bias absorbed in "
                f"{self.bias_absorbed} channel(s); bias corrected in {len(self.bias_corrected)} layer(s)")


@torch.no_grad()
def equalize(model: nn.Module, iters: int = 20, absorb: bool = True,
             n_sigma: float = 3.0) -> tuple[list[Chain], list[str], int]:
    """Cross-layer equalization (``iters`` sweeps over all chains) and high-bias absorption,
    in place on ``model``. Raises :class:`NotApplicable` if the model has no chain."""
    chains, searched = find_chains(model)
    if not chains:
        raise NotApplicable("no conv(+BN)->ReLU->conv chain found in the model graph "
                            f"(searched: {', '.join(searched) or 'nothing traced'})")
    per_channel_relu6(model, chains)
    modules = dict(model.named_modules())
    for _ in range(iters):
        for chain in chains:
            equalize_chain(modules, chain)
    absorbed = 0
    if absorb:
        for chain in chains:
            if chain.bn is not None:
                absorbed += int((absorb_high_bias(modules, chain, n_sigma) > 0).sum())
    return chains, searched, absorbed


def dfq_quantize(teacher: nn.Module, qconfig: QConfig, example: torch.Tensor, eq_iters: int = 20,
                 absorb_bias: bool = True, bias_correction: bool = True,
                 work_dir: Path | None = None) -> tuple[nn.Module, DFQReport]:
    """Equalize a copy of P, quantize it, correct the biases; P itself is untouched.
    The chains are printed and, with ``work_dir``, written to ``dfq.json`` there."""
    model = copy.deepcopy(teacher).eval()
    chains, searched, absorbed = equalize(model, eq_iters, absorb_bias)
    qmodel, _ = quantize_model(model, qconfig, example_input=example)
    corrected = []
    if bias_correction:
        stats = dict(model.named_modules())
        # the equalized clips (Q may have wrapped them in activation quantizers)
        qmods = {**dict(qmodel.named_modules()), **{c.act: stats[c.act] for c in chains if c.act in stats}}
        if qconfig.bn_fold:  # the BN statistics that give E[x] were folded away: keep P's (same chains)
            qmods.update({c.bn: stats[c.bn] for c in chains if c.bn})
        corrected = [c.conv2 for c in chains if correct_bias(qmods, c)]
    report = DFQReport(searched, [asdict(c) for c in chains], absorbed, corrected)
    print(report.summary(), file=sys.stderr)
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "dfq.json").write_text(json.dumps(asdict(report), indent=1))
    return qmodel, report
