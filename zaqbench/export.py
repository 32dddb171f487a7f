"""Keep the quantized model: one weights-only file a user loads back onto the full-precision
architecture, exactly as the run evaluated it.

The file holds tensors and plain data only (``torch.load(weights_only=True)`` reads it): Q's
``state_dict`` (its weights after training, BN folded if the protocol folds it), every activation
quantizer's range, the quantization protocol (``QConfig``) and what produced it. Loading rebuilds
Q from the caller's FP model with ``quantize_model`` and the stored protocol, then loads the
state: no pickled code is ever run. Changes a method makes to the FP structure are carried too:
DFQ's per-channel ReLU6 ceilings and the biases it adds to bias-free convolutions.
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import atomic_save, load_file
from .errors import UserError
from .quant import QConfig, layer_coverage, load_quantizer_state, quantize_model, quantizer_state
from .quant.equalization import restore_channel_relu6

FORMAT = "zaqbench-quantized-model"
VERSION = 1


def save_quantized(qmodel: nn.Module, qconfig: QConfig, path: str | Path, input_shape: tuple[int, int, int],
                   **info: Any) -> Path:
    """Write ``qmodel`` (built by ``quantize_model`` with ``qconfig``) to ``path``, atomically.
    ``input_shape`` (C, H, W) is what BN folding traces on load; ``info`` (method, bits, seed,
    metric...) is stored as given: plain values only."""
    quantized, full_precision = layer_coverage(qmodel)
    payload = {
        "format": FORMAT, "version": VERSION,
        "qconfig": {**asdict(qconfig), "fp_layers": list(qconfig.fp_layers)},
        "input_shape": [int(v) for v in input_shape],
        "state_dict": {k: v.detach().cpu() for k, v in qmodel.state_dict().items()},
        "quantizers": {k: v.cpu() for k, v in quantizer_state(qmodel).items()},
        "layers": {"quantized": quantized, "full_precision": full_precision},
        "info": dict(info),
    }
    path = Path(path)
    atomic_save(payload, path)
    return path


def _carry_structure(model: nn.Module, state: dict[str, torch.Tensor], qconfig: QConfig) -> None:
    """Give the FP model the structure a method added before quantizing: per-channel ReLU6
    ceilings (DFQ's, rebuilt by the module that makes them) and biases of convolutions that had none."""
    ceilings = {}
    for key, value in state.items():
        name, _, leaf = key.rpartition(".")
        if leaf == "ceiling":
            if qconfig.a_placement == "after-relu" and name.endswith(".relu"):
                name = name[: -len(".relu")]  # the QuantReLU wrapper's child
            ceilings[name] = value.numel()
    restore_channel_relu6(model, ceilings)
    modules = dict(model.named_modules())
    for key, value in state.items():
        name, _, leaf = key.rpartition(".")
        if leaf == "bias" and isinstance(modules.get(name), (nn.Conv2d, nn.Linear)) and modules[name].bias is None:
            layer = modules[name]
            layer.bias = nn.Parameter(torch.zeros_like(value, device=layer.weight.device))


def load_quantized(model: nn.Module, path: str | Path) -> nn.Module:
    """The quantized model stored at ``path``, rebuilt on ``model`` (the FP architecture, e.g.
    freshly built; it is not modified), in eval mode, on ``model``'s device."""
    payload = load_file(path, map_location="cpu")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a zaqbench quantized model (written by --export or save_quantized)")
    if payload.get("version") != VERSION:
        raise UserError(f"'{path}' has export version {payload.get('version')}; this zaqbench reads {VERSION}")
    qconfig = QConfig(**payload["qconfig"])
    fp = copy.deepcopy(model).eval()
    _carry_structure(fp, payload["state_dict"], qconfig)
    device = next(fp.parameters()).device
    example = torch.zeros(1, *payload["input_shape"], device=device)
    qmodel, _ = quantize_model(fp, qconfig, example_input=example)
    fix = "load it onto the architecture it was made from"
    try:
        missing, unexpected = qmodel.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as err:  # shapes differ
        raise UserError(f"'{path}' does not fit this model ({str(err).splitlines()[-1].strip()}); {fix}") from None
    if missing or unexpected:
        raise UserError(f"'{path}' does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
                        f"keys, e.g. {(missing or unexpected)[0]}); {fix}")
    load_quantizer_state(qmodel, {k: v.to(device) for k, v in payload["quantizers"].items()})
    return qmodel.eval()
