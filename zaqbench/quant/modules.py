"""Quantized Conv2d / Linear that stay drop-in replacements of the originals.

They are subclasses of ``nn.Conv2d`` / ``nn.Linear`` built by adopting the
original module's attributes, so parameter names, ``state_dict`` keys and any
attribute code reads from the layer (``in_channels``, ``kernel_size``...) are
unchanged. The input activation is fake-quantized *before* the layer, which is
where an integer kernel would need it (``a_placement='layer-input'``, the default).

With ``a_placement='after-relu'`` (the official ZAQ code's placement) the layers take
their input as it comes (``act_quant`` is None) and each ReLU module is replaced by a
:class:`QuantReLU` that quantizes its output: a ReLU module called twice (a ResNet
block's) shares one range, the image is not quantized, an identity shortcut adds the
quantized block input, and pooling averages quantized values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fake_quant import FakeQuantizer


def _quantized_weight(layer: nn.Module) -> torch.Tensor:
    """The fake-quantized weight; without autograd (evaluation) it is cached until the
    weight changes: an in-place update moves its version counter, ``.to()`` swaps its storage
    (new address), and a replaced weight is a different object, whatever address it reuses.
    A traced forward (``torch.export``, ``torch.compile``) computes it: the trace must hold the
    quantizer, and a traced weight has no storage to key a cache on."""
    weight, quantizer = layer.weight, layer.weight_quant
    if torch.is_grad_enabled() or not quantizer.active or torch.compiler.is_compiling():
        return quantizer(weight)
    cached = layer.__dict__.get("_wq_cache")
    state = (weight.data_ptr(), weight.device, weight._version, quantizer.bits)
    if cached is None or cached[0] is not weight or cached[1] != state:
        cached = (weight, state, quantizer(weight))
        layer.__dict__["_wq_cache"] = cached
    return cached[2]


class _QuantizedLayer:
    """Mixin: build the quantized layer by adopting the float layer's state."""

    weight_quant: FakeQuantizer
    act_quant: FakeQuantizer | None  # None: the input is quantized elsewhere (after the ReLU before)

    @classmethod
    def from_float(cls, layer: nn.Module, weight_quant: FakeQuantizer, act_quant: FakeQuantizer | None):
        q = cls.__new__(cls)
        # same tensors, separate containers, so adding the quantizers leaves ``layer`` untouched
        q.__dict__.update(layer.__dict__)
        q._parameters = layer._parameters.copy()
        q._buffers = layer._buffers.copy()
        q._modules = layer._modules.copy()
        q.weight_quant = weight_quant
        q.act_quant = act_quant
        return q

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.act_quant is None else self.act_quant(x)


class QuantConv2d(_QuantizedLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), _quantized_weight(self), self.bias)


class QuantLinear(_QuantizedLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), _quantized_weight(self), self.bias)


class KeepForwardQuantLayer(_QuantizedLayer):
    """Mixin for a Conv2d/Linear subclass with a ``forward`` of its own (a same-padding conv that
    pads first, a weight-normalising wrapper...): that forward runs unchanged on the quantized
    input, with the fake-quantized weight in the ``weight`` slot for the duration of the call, so
    whatever it does around the convolution is kept and the convolution itself is quantized.

    The swap is the one :func:`torch.func.functional_call` makes, done in place because the forward
    to call is the parent class's, not this module's."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weight = _quantized_weight(self)
        original = self._parameters["weight"]
        self._parameters["weight"] = weight
        try:
            return super().forward(self.quantized_input(x), *args, **kwargs)
        finally:
            self._parameters["weight"] = original


def keep_forward_class(layer_class: type) -> type:
    """The quantized counterpart of a Conv2d/Linear subclass with its own forward: a subclass of
    both :class:`KeepForwardQuantLayer` and ``layer_class`` (so ``isinstance`` checks on the
    original class still hold)."""
    return type(f"Quant{layer_class.__name__}", (KeepForwardQuantLayer, layer_class), {"__module__": __name__})


QUANT_MODULES = (QuantConv2d, QuantLinear, KeepForwardQuantLayer)


class QuantReLU(nn.Module):
    """A ReLU (or ReLU6) module followed by the fake-quantizer of its output; the original
    module stays a child (``relu``), so its ``inplace`` / clipping behaviour is kept."""

    def __init__(self, relu: nn.Module, act_quant: FakeQuantizer) -> None:
        super().__init__()
        self.relu = relu
        self.act_quant = act_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_quant(self.relu(x))


RELU_MODULES = (nn.ReLU, nn.ReLU6)
