"""Deployment: the quantized model as an ONNX graph with QDQ pairs, run and timed by onnxruntime."""
from .onnx_export import (DEFAULT_OPSET, FixedFakeQuant, OnnxExport, check_exportable, check_opset, export_onnx,
                          frozen_copy, grid_storage, representation)

__all__ = ["DEFAULT_OPSET", "FixedFakeQuant", "OnnxExport", "check_exportable", "check_opset", "export_onnx",
           "frozen_copy", "grid_storage", "representation"]
