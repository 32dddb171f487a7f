"""``quantize_model``: turn any ``nn.Module`` into its fake-quantized copy Q.

Conv2d and Linear layers are swapped for :class:`QuantConv2d` / :class:`QuantLinear`
in place of the originals (same names, same ``state_dict`` keys); a subclass with a ``forward``
of its own keeps it (:func:`keep_forward_class`). Any other layer that computes a convolution or
linear map is refused unless ``fp_layers`` keeps it in full precision, and so is a setting that
would quantize nothing. Layers are
chosen by type, never by substrings of attribute names; the ones kept in full
precision are the first and/or last quantizable layer (in registration order)
and any whose full name matches a ``fp_layers`` glob pattern.

Activation quantizers sit at each quantized layer's input (``a_placement='layer-input'``)
or, as in the official ZAQ code, after every ReLU/ReLU6 module (``'after-relu'``);
:func:`act_quantizers` lists them either way.
"""
from __future__ import annotations

import copy
import fnmatch
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import UserError
from .bn_fold import fold_bn
from .fake_quant import FULL_PRECISION_BITS, FakeQuantizer
from .modules import QUANT_MODULES, RELU_MODULES, QuantConv2d, QuantLinear, QuantReLU, keep_forward_class
from .qconfig import QConfig


#: Modules that compute a convolution or a linear map. Conv2d and Linear, subclasses included, are
#: quantized; the others have no quantized counterpart here and are refused unless ``fp_layers``
#: keeps them in full precision explicitly, so no such layer is ever left unquantized silently.
COMPUTE_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.MultiheadAttention)


def _supported(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) and not isinstance(module, QUANT_MODULES)


def _keeps_plain_forward(module: nn.Module) -> bool:
    """Conv2d/Linear itself, or a subclass that does not change what ``forward`` computes (mmcv's
    wrappers only special-case empty batches): these become :class:`QuantConv2d`/:class:`QuantLinear`."""
    base = nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear
    return type(module).forward is base.forward or type(module).__module__.startswith("mmcv.cnn.bricks.wrappers")


def compute_layers(model: nn.Module) -> list[str]:
    """Names of the modules that compute a convolution or linear map, in registration order;
    outermost only (an attention module computes its projections itself, not through its
    ``out_proj`` child's forward)."""
    names: list[str] = []
    for name, module in model.named_modules():
        if name and isinstance(module, COMPUTE_LAYERS) and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers ``quantize_model`` can swap, in registration order."""
    modules = dict(model.named_modules())
    return [name for name in compute_layers(model) if _supported(modules[name])]


def full_precision_layers(model: nn.Module, qconfig: QConfig) -> list[str]:
    """The layers kept in full precision: the first and/or last quantizable layer, and every
    conv/linear layer whose name matches an ``fp_layers`` pattern."""
    names = quantizable_layers(model)
    compute = compute_layers(model)
    keep: list[str] = []
    if names and qconfig.first_fp:
        keep.append(names[0])
    if names and qconfig.last_fp:
        keep.append(names[-1])
    for pattern in qconfig.fp_layers:
        matched = [n for n in compute if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise UserError(f"fp_layers pattern '{pattern}' matches no convolution or linear layer of the model")
        keep += matched
    return sorted(set(keep), key=compute.index)


def check_quantizable(model: nn.Module, qconfig: QConfig) -> tuple[list[str], list[str]]:
    """(layers to quantize, layers kept in full precision) of ``model`` under ``qconfig``.

    Refuses, naming the layers, a convolution or linear layer that cannot be quantized and is not
    kept in full precision explicitly, and a setting that would quantize no layer at all: either
    would report a full-precision layer under a low-bit protocol."""
    fp_names = full_precision_layers(model, qconfig)
    keep = set(fp_names)
    modules = dict(model.named_modules())
    compute = compute_layers(model)
    to_quantize = [n for n in compute if n not in keep and _supported(modules[n])]
    if qconfig.is_full_precision:  # nothing is rounded: a layer without a quantized kind changes nothing
        return to_quantize, fp_names
    refused = [n for n in compute if n not in keep and not _supported(modules[n])]
    if refused:
        kinds = sorted({type(modules[n]).__name__ for n in refused})
        shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
        raise UserError(f"{len(refused)} layer(s) of type {'/'.join(kinds)} cannot be quantized ({shown}); "
                        "only Conv2d and Linear layers are; keep them in full precision explicitly with "
                        "quant.fp_layers=[...] (glob patterns of their names)")
    if not to_quantize:
        raise UserError(f"no layer would be quantized: the model has {len(compute)} convolution/linear layer(s) and "
                        f"all are kept in full precision ({', '.join(fp_names) or 'none found'}); a W"
                        f"{qconfig.wbits}A{qconfig.abits} row would report the full-precision model")
    return to_quantize, fp_names


def layer_coverage(model: nn.Module) -> tuple[list[str], list[str]]:
    """(quantized, full-precision) names of ``model``'s convolution/linear layers, read off the
    model itself: what a result row says was quantized is what was evaluated."""
    modules = dict(model.named_modules())
    names = compute_layers(model)
    quantized = [n for n in names if isinstance(modules[n], QUANT_MODULES)]
    return quantized, [n for n in names if not isinstance(modules[n], QUANT_MODULES)]


def _act_quantizer(qconfig: QConfig, device: torch.device) -> FakeQuantizer:
    return FakeQuantizer(
        qconfig.abits, qconfig.a_symmetric, per_channel=False, range_rule=qconfig.a_range,
        momentum=qconfig.a_momentum, rounding=qconfig.rounding, ste=qconfig.ste,
    ).to(device)


def _make_quantizers(module: nn.Module, qconfig: QConfig) -> tuple[FakeQuantizer, FakeQuantizer | None]:
    """The weight quantizer and, with ``layer-input`` placement, the input quantizer of ``module``."""
    device = next(module.parameters()).device
    weight_quant = FakeQuantizer(
        qconfig.wbits, qconfig.w_symmetric, per_channel=qconfig.w_granularity == "channel",
        ch_axis=0, range_rule="current", include_zero=qconfig.w_range == "include-zero",
        rounding=qconfig.rounding, ste=qconfig.ste,
    )
    act_quant = _act_quantizer(qconfig, device) if qconfig.a_placement == "layer-input" else None
    return weight_quant.to(device), act_quant


def _quantize_relus(qmodel: nn.Module, qconfig: QConfig) -> list[str]:
    """Wrap every ReLU/ReLU6 module in a :class:`QuantReLU` (one quantizer per module, however
    often it is called); a model without ReLU modules (functional ReLUs, other activations)
    would keep every activation in full precision, so it is refused."""
    device = next(qmodel.parameters()).device
    names = [name for name, m in qmodel.named_modules() if isinstance(m, RELU_MODULES)]
    if not names and qconfig.abits not in FULL_PRECISION_BITS:
        raise UserError("a_placement='after-relu' found no nn.ReLU/nn.ReLU6 module in the model (functional "
                        "ReLUs cannot be found); its activations would stay in full precision; use "
                        "a_placement='layer-input'")
    modules = dict(qmodel.named_modules())
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else qmodel, attr,
                QuantReLU(modules[name], _act_quantizer(qconfig, device)))
    return names


def quantize_model(
    model: nn.Module, qconfig: QConfig, example_input: torch.Tensor | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Return (Q, info): a quantized deep copy of ``model`` and what was done.

    ``example_input`` is needed only for BN folding (to find conv->BN pairs).
    ``info`` lists quantized and full-precision layer names and folded pairs.
    """
    qmodel = copy.deepcopy(model)
    folded: list[tuple[str, str]] = []
    if qconfig.bn_fold:
        if example_input is None:
            raise ValueError("bn_fold=True needs example_input to find conv->BN pairs")
        folded = fold_bn(qmodel, example_input)
    to_quantize, fp_names = check_quantizable(qmodel, qconfig)
    modules = dict(qmodel.named_modules())
    quantized: list[str] = []
    keep_forward: dict[type, type] = {}  # one quantized class per original class, for this call
    for name in to_quantize:
        layer = modules[name]
        wq, aq = _make_quantizers(layer, qconfig)
        if _keeps_plain_forward(layer):
            cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        else:
            if type(layer) not in keep_forward:
                keep_forward[type(layer)] = keep_forward_class(type(layer))
            cls = keep_forward[type(layer)]
        qlayer = cls.from_float(layer, wq, aq)
        parent_name, _, attr = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else qmodel, attr, qlayer)
        quantized.append(name)
    relus = _quantize_relus(qmodel, qconfig) if qconfig.a_placement == "after-relu" else []
    info = {"quantized": quantized, "full_precision": fp_names, "bn_folded_pairs": folded,
            "quantized_relus": relus}
    return qmodel, info


def quant_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, QUANT_MODULES):
            yield name, m


def act_quantizers(model: nn.Module) -> Iterator[tuple[str, FakeQuantizer]]:
    """(name of the module holding it, quantizer) for every activation quantizer: quantized
    layers' input quantizers and :class:`QuantReLU` output quantizers, in module order."""
    for name, m in model.named_modules():
        if isinstance(m, QUANT_MODULES + (QuantReLU,)) and m.act_quant is not None:
            yield name, m.act_quant


def set_quantization(model: nn.Module, weight: bool | None = None, act: bool | None = None) -> None:
    """Switch weight and/or activation fake-quantization on or off (None = leave as is)."""
    if weight is not None:
        for _, m in quant_layers(model):
            m.weight_quant.enabled = weight
    if act is not None:
        for _, q in act_quantizers(model):
            q.enabled = act


def set_act_observing(model: nn.Module, on: bool) -> None:
    """Calibrate (update activation ranges on every forward) or freeze them."""
    for _, q in act_quantizers(model):
        q.observing = on


def reset_act_ranges(model: nn.Module) -> None:
    for _, q in act_quantizers(model):
        q.reset_range()


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches, forward=None) -> int:
    """Reset and recompute activation ranges from ``batches``; ranges are frozen after.

    ``forward(model, x)`` runs the model (default ``model(x)``); the model runs in
    eval mode so BN statistics are not disturbed. Returns the number of batches.

    Under torchrun every rank passes its rows of the same batches
    (:func:`zaqbench.distributed.local_rows`): each observation is reduced over ranks (min of
    mins, max of maxes) before it quantizes, so every rank ends with the ranges one process
    computes from the whole batches. It is a collective: all ranks must call it alike.
    """
    forward = forward or (lambda m, x: m(x))
    was_training = model.training
    model.eval()
    reset_act_ranges(model)
    set_act_observing(model, True)
    n = 0
    try:
        for x in batches:
            forward(model, x)
            n += 1
    finally:
        set_act_observing(model, False)
        model.train(was_training)
    if n == 0:
        raise ValueError("calibrate_activations got no batches; activation ranges would be unset")
    return n


def quantizer_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Activation ranges (not in ``state_dict``) for checkpoints."""
    state = {}
    for name, q in act_quantizers(model):
        state[f"{name}.act_quant.min_val"] = q.min_val.detach().clone()
        state[f"{name}.act_quant.max_val"] = q.max_val.detach().clone()
    return state


@torch.no_grad()
def load_quantizer_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, q in act_quantizers(model):
        q.min_val.copy_(state[f"{name}.act_quant.min_val"])
        q.max_val.copy_(state[f"{name}.act_quant.max_val"])
