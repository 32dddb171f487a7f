"""Fake-quantization core: quantizers, quantized layers, ``quantize_model``."""
from .fake_quant import FakeQuantizer, affine_qparams, check_bits, official_fake_quantize, quant_range
from .modules import QuantConv2d, QuantLinear, QuantReLU
from .qconfig import PRESETS, QConfig
from .quantize import (
    act_quantizers,
    calibrate_activations,
    check_quantizable,
    compute_layers,
    full_precision_layers,
    layer_coverage,
    load_quantizer_state,
    quant_layers,
    quantizable_layers,
    quantize_model,
    quantizer_state,
    reset_act_ranges,
    set_act_observing,
    set_quantization,
)

__all__ = [
    "FakeQuantizer", "affine_qparams", "check_bits", "official_fake_quantize", "quant_range", "QuantConv2d",
    "QuantLinear", "QuantReLU", "act_quantizers",
    "PRESETS", "QConfig", "calibrate_activations", "check_quantizable", "compute_layers",
    "layer_coverage", "full_precision_layers", "load_quantizer_state",
    "quant_layers", "quantizable_layers", "quantize_model", "quantizer_state", "reset_act_ranges",
    "set_act_observing", "set_quantization",
]
