"""A quantized model as ONNX with QuantizeLinear/DequantizeLinear (QDQ) pairs, for onnxruntime.

The graph computes what the fake-quantized model Q computes. Each of Q's quantizers becomes
a :class:`FixedFakeQuant` with its scale and zero point frozen (weights: the range of the trained
weight; activations: the calibrated range). It computes with the same fused torch operators as
:class:`~zaqbench.quant.FakeQuantizer` (``torch.fake_quantize_per_tensor_affine`` /
``..._per_channel_affine``, called through one custom operator, :func:`fake_quantize_op`), so the
frozen copy equals Q element for element. The torch exporter (``torch.onnx.export(dynamo=True)``)
turns each call into a Q/DQ pair through this module's entry in its ``custom_translation_table``
(:func:`_translations`; the exporter's own entries cover 8-bit grids only). How a grid of ``b``
bits is stored (:func:`grid_storage`):

* 8 bits: int8 (symmetric) / uint8 (affine) QDQ;
* 4 bits at opset >= 21, where the installed onnxruntime runs it: int4 / uint4 QDQ;
* any other width (2-7 bits; 4 otherwise): 8-bit QDQ with a Clip between Q and DQ that keeps
  the integer on the ``b``-bit grid [qmin, qmax], since QuantizeLinear saturates to its type's range.

Weights enter the graph already on their grid (the fake-quantized weight), so their Q node yields
the integers torch computed whatever the rounding of the division; first/last layers kept in full
precision have no QDQ, and folded BN is in the weights. Activations are quantized by the runtime
from its own float results: ``round(x / scale)`` half to even, where torch computes
``nearbyint(x * (1 / scale))``; the two can differ in the last bit, and so can the float sums
before them.

The official ZAQ code's quantizer (``rounding='after-zero-point'``, the ``zaq-code`` preset) has
no QDQ form: :func:`check_exportable` refuses it.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import UserError
from ..run.results import replace_keeping_mode
from ..quant import QConfig, quant_layers
from ..quant.fake_quant import FULL_PRECISION_BITS, FakeQuantizer, affine_qparams, quant_range
from ..quant.modules import QUANT_MODULES, QuantReLU
from .runtime import INPUT_NAME, META_PREFIX, OrtGraph

#: the oldest opset the torch exporter writes (it has no translations below it)
MIN_OPSET = 18
#: int4 / uint4 tensors (and so 4-bit QDQ) exist from this opset on
INT4_OPSET = 21
DEFAULT_OPSET = 21


@dataclass(frozen=True)
class GridStorage:
    """How one integer grid [qmin, qmax] is stored in the graph: the ONNX element type of the
    Q output and zero point, and whether a Clip keeps values inside the narrower grid."""

    qmin: int
    qmax: int
    onnx_type: str  # 'int8' | 'uint8' | 'int4' | 'uint4'
    clip: bool

    def describe(self) -> str:
        return f"{self.onnx_type} QDQ" + (f" + Clip[{self.qmin}..{self.qmax}]" if self.clip else "")


def grid_storage(qmin: int, qmax: int, opset: int) -> GridStorage:
    """The narrowest ONNX integer type of ``opset`` that holds [qmin, qmax] exactly as a QDQ
    grid and that the installed onnxruntime runs (:func:`runtime_error`): 4 bits only when the
    grid is the whole int4/uint4 range (ONNX's Clip takes no 4-bit tensors), else 8 bits with a
    Clip when the grid is narrower than the type."""
    signed = qmin < 0
    bits = (qmax - qmin + 1).bit_length() - 1
    if bits == 4 and opset >= INT4_OPSET:
        native = GridStorage(qmin, qmax, "int4" if signed else "uint4", False)
        if not runtime_error(native, opset):
            return native
    full = (-128, 127) if signed else (0, 255)
    return GridStorage(qmin, qmax, "int8" if signed else "uint8", (qmin, qmax) != full)


def representation(qconfig: QConfig, opset: int) -> str:
    """What the graph holds for ``qconfig``'s weights and activations at ``opset``, for the
    export's metadata and the result row, e.g. ``W4:int4 QDQ per-channel/A4:uint4 QDQ``."""
    parts = []
    for kind, bits, symmetric, granularity in (
            ("W", qconfig.wbits, qconfig.w_symmetric, f" per-{qconfig.w_granularity}"),
            ("A", qconfig.abits, qconfig.a_symmetric, "")):
        if bits in FULL_PRECISION_BITS:
            parts.append(f"{kind}{bits}:float")
        else:
            parts.append(f"{kind}{bits}:{grid_storage(*quant_range(bits, symmetric), opset).describe()}{granularity}")
    return "/".join(parts)


def max_opset() -> int:
    """The newest opset the installed ``onnx`` defines (the exporter converts its graph up to it)."""
    import onnx

    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> None:
    """``opset`` is one the torch exporter writes and the installed onnxruntime runs QDQ at."""
    import onnxruntime

    usable = f"use {MIN_OPSET}-{max_opset()} (default {DEFAULT_OPSET})"
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise UserError(f"--onnx-opset {opset!r} is too old: the torch exporter writes opset {MIN_OPSET} or newer; "
                        f"{usable}")
    if opset > max_opset():
        raise UserError(f"--onnx-opset {opset} is newer than the installed onnx defines; {usable}")
    for storage in {grid_storage(-128, 127, opset), grid_storage(0, 255, opset)}:
        error = runtime_error(storage, opset)
        if error:
            raise UserError(f"--onnx-opset {opset}: onnxruntime {onnxruntime.__version__} cannot run it ({error}); "
                            f"use an older opset, e.g. --onnx-opset {DEFAULT_OPSET}")


def check_exportable(qconfig: QConfig, opset: int = DEFAULT_OPSET) -> None:
    """Refuse, before any work, a protocol without an exact QDQ form, or grids the installed
    onnxruntime cannot run at ``opset`` (each is tried on a one-convolution graph, in milliseconds)."""
    import onnxruntime

    check_opset(opset)
    if qconfig.rounding != "before-zero-point":
        raise UserError(f"rounding='{qconfig.rounding}' (the zaq-code preset's quantizer) rounds after subtracting "
                        "the zero point, which QuantizeLinear cannot express exactly, so no ONNX model is written "
                        "for it; use the default preset for a deployable model")
    for bits, symmetric in ((qconfig.wbits, qconfig.w_symmetric), (qconfig.abits, qconfig.a_symmetric)):
        if bits in FULL_PRECISION_BITS:
            continue
        storage = grid_storage(*quant_range(bits, symmetric), opset)
        error = runtime_error(storage, opset)
        if error:
            raise UserError(f"onnxruntime {onnxruntime.__version__} cannot run {bits}-bit {storage.describe()} at "
                            f"opset {opset} ({error}); choose another --onnx-opset or bit width")


RUNTIME_CHECKS: dict[tuple[GridStorage, int], str] = {}


def runtime_error(storage: GridStorage, opset: int) -> str:
    """'' if onnxruntime loads and runs ``storage``'s pattern at ``opset``, else why not. The
    pattern is a quantized convolution after a ReLU6: Conv -> Clip -> Q [-> Clip] -> DQ (per tensor)
    into a Conv whose weight is Q [-> Clip] -> DQ (per channel); a runtime's graph optimisations may reject a type there (onnxruntime 1.32's
    Clip/Q fusion rejects 4-bit zero points), so the probe runs them too."""
    key = (storage, opset)
    if key not in RUNTIME_CHECKS:
        import numpy as np
        import onnxruntime
        from onnx import TensorProto, helper

        elem = getattr(TensorProto, storage.onnx_type.upper())
        zero_point = 0 if storage.qmin < 0 else storage.qmin
        inits = [helper.make_tensor("zp", elem, [], [zero_point]), helper.make_tensor("scale", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("zps", elem, [2], [zero_point] * 2),
                 helper.make_tensor("scales", TensorProto.FLOAT, [2], [0.5, 0.25]),
                 helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("six", TensorProto.FLOAT, [], [6.0]),
                 helper.make_tensor("weight", TensorProto.FLOAT, [2, 2, 1, 1], [1.0, 0.5, -0.5, 1.0])]
        if storage.clip:
            inits += [helper.make_tensor("lo", elem, [], [storage.qmin]), helper.make_tensor("hi", elem, [], [storage.qmax])]
        nodes = []
        for branch, source, axis, (scale, zp) in (("a", "r", None, ("scale", "zp")),
                                                  ("w", "weight", 0, ("scales", "zps"))):
            kwargs = {} if axis is None else {"axis": axis}
            nodes.append(helper.make_node("QuantizeLinear", [source, scale, zp], [f"{branch}q"], **kwargs))
            quantized = f"{branch}q"
            if storage.clip:
                nodes.append(helper.make_node("Clip", [quantized, "lo", "hi"], [f"{branch}c"]))
                quantized = f"{branch}c"
            nodes.append(helper.make_node("DequantizeLinear", [quantized, scale, zp], [f"{branch}y"], **kwargs))
        nodes = [helper.make_node("Conv", ["x", "weight"], ["c"]), helper.make_node("Clip", ["c", "zero", "six"], ["r"]),
                 *nodes, helper.make_node("Conv", ["ay", "wy"], ["y"])]
        shape = [1, 2, 1, 1]
        graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 4  # fatal only: the probe's failure is the answer, not news
            session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            session.run(None, {"x": np.ones(shape, dtype=np.float32)})
            RUNTIME_CHECKS[key] = ""
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for unsupported kernels
            text = str(err).strip()
            RUNTIME_CHECKS[key] = text.splitlines()[0][:300] if text else type(err).__name__
    return RUNTIME_CHECKS[key]


@functools.cache
def fake_quantize_op() -> Callable[..., torch.Tensor]:
    """``zaqbench::fake_quantize(x, scale, zero_point, axis, quant_min, quant_max)``: torch's fused
    ``fake_quantize_per_tensor_affine`` (``axis`` < 0) or ``..._per_channel_affine``, as one custom
    operator with a shape-only fake kernel. Why not the fused operators themselves: the per-tensor
    one decomposes, under a traced dynamic batch, into a kernel torch has no fake implementation
    for; a custom operator stays one node, which :func:`_translations` turns into QDQ. Registered
    on first use (nothing happens at import)."""

    @torch.library.custom_op("zaqbench::fake_quantize", mutates_args=())
    def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                      quant_min: int, quant_max: int) -> torch.Tensor:
        if axis < 0:
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)

    @fake_quantize.register_fake
    def _(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
          quant_min: int, quant_max: int) -> torch.Tensor:
        return torch.empty_like(x)

    return torch.ops.zaqbench.fake_quantize.default


class FixedFakeQuant(nn.Module):
    """A quantizer with its scale and zero point frozen: torch's fused fake-quantization
    operator on a fixed grid (what :class:`FakeQuantizer` computes once its range is set).

    ``scale``/``zero_point``: float32 / int32 buffers, scalars per tensor, one entry per slice along
    ``axis`` per channel."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                 axis: int | None, bits: int) -> None:
        super().__init__()
        self.qmin, self.qmax, self.axis, self.bits = qmin, qmax, axis, bits
        self.active = True  # read by the quantized layers' weight cache
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("zero_point", zero_point.detach().to(torch.int32).clone())

    @classmethod
    def freeze(cls, quantizer: FakeQuantizer, x: torch.Tensor | None = None) -> "FixedFakeQuant":
        """``quantizer``'s grid: from ``x`` (a weight) for a quantizer that recomputes its range
        on every input, else from its calibrated range."""
        if quantizer.rounding != "before-zero-point":
            raise UserError("a quantizer with rounding='after-zero-point' has no QDQ form")
        if quantizer.range_rule == "current":
            lo, hi = quantizer.current_range(x)
        else:
            if not quantizer.has_range:
                raise UserError("an activation quantizer has no calibrated range; calibrate the model first")
            lo, hi = quantizer.min_val, quantizer.max_val
        scale, zero_point = affine_qparams(lo, hi, quantizer.bits, quantizer.symmetric, quantizer.include_zero)
        qmin, qmax = quant_range(quantizer.bits, quantizer.symmetric)
        return cls(scale, zero_point, qmin, qmax, quantizer.ch_axis if quantizer.per_channel else None, quantizer.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize_op()(x, self.scale, self.zero_point, -1 if self.axis is None else self.axis,
                                  self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, grid=[{self.qmin}, {self.qmax}], axis={self.axis}"


@torch.no_grad()
def frozen_copy(qmodel: nn.Module) -> nn.Module:
    """A deep copy of ``qmodel`` (eval mode) whose quantizers are :class:`FixedFakeQuant` and whose
    quantized layers hold their fake-quantized weights: what the exporter traces."""
    frozen = copy.deepcopy(qmodel).eval().requires_grad_(False)
    for _, layer in quant_layers(frozen):
        wq = layer.weight_quant
        if wq.active:
            fixed = FixedFakeQuant.freeze(wq, layer.weight)
            layer.weight.copy_(wq(layer.weight))  # on its grid: Q of it gives exactly torch's integers
            layer.weight_quant = fixed
    for module in frozen.modules():
        if isinstance(module, (*QUANT_MODULES, QuantReLU)) and module.act_quant is not None \
                and module.act_quant.active:
            module.act_quant = FixedFakeQuant.freeze(module.act_quant)
    return frozen


def flatten_outputs(obj: Any) -> tuple[list[torch.Tensor], Any]:
    """(tensors, structure) of a nested tensor / list / tuple: the structure is plain JSON data
    (``None`` for a tensor, a list of structures for a sequence) that :func:`unflatten_outputs`
    reads back."""
    if isinstance(obj, torch.Tensor):
        return [obj], None
    if isinstance(obj, (list, tuple)):
        tensors, structure = [], []
        for item in obj:
            t, s = flatten_outputs(item)
            tensors += t
            structure.append(s)
        return tensors, structure
    raise UserError(f"the model's raw output holds a {type(obj).__name__}; only tensors and lists/tuples of "
                    "them can be exported to ONNX")


class RawOutputs(nn.Module):
    """``forward(x)`` = the flat tuple of ``raw(model, x)``'s tensors (the exporter traces this)."""

    def __init__(self, model: nn.Module, raw: Callable[[nn.Module, torch.Tensor], Any]) -> None:
        super().__init__()
        self.model, self._raw = model, raw

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self._raw(self.model, x))[0])


def _translations(opset: int) -> dict[Callable, Callable]:
    """The exporter's translations of torch's fused fake-quantization operators into
    QuantizeLinear [-> Clip] -> DequantizeLinear at ``opset``, for any grid (:func:`grid_storage`)."""
    import numpy as np
    import onnxscript
    from onnxscript import ir

    op = getattr(onnxscript, f"opset{opset}", None) or onnxscript.opset21
    types = {"int8": ir.DataType.INT8, "uint8": ir.DataType.UINT8, "int4": ir.DataType.INT4,
             "uint4": ir.DataType.UINT4}

    def qdq(x, scale, zero_point, qmin: int, qmax: int, axis: int | None):
        storage = grid_storage(qmin, qmax, opset)
        dtype = types[storage.onnx_type]
        kwargs = {} if axis is None else {"axis": axis}
        zero_point = op.Cast(zero_point, to=dtype)
        q = op.QuantizeLinear(x, scale, zero_point, **kwargs)
        if storage.clip:
            lo = op.Constant(value=ir.tensor(np.array(qmin, dtype=np.int8 if qmin < 0 else np.uint8)))
            hi = op.Constant(value=ir.tensor(np.array(qmax, dtype=np.int8 if qmin < 0 else np.uint8)))
            q = op.Clip(q, lo, hi)
        return op.DequantizeLinear(q, scale, zero_point, **kwargs)

    def fake_quantize(self, scale, zero_point, axis: int, quant_min: int, quant_max: int):
        return qdq(self, scale, zero_point, quant_min, quant_max, None if axis < 0 else axis)

    return {fake_quantize_op(): fake_quantize}


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and checked."""

    path: Path
    opset: int
    representation: str
    output_structure: Any
    max_abs_diff: float  # largest |torch - onnxruntime| over the example's outputs
    metadata: dict[str, str]


def export_onnx(qmodel: nn.Module, qconfig: QConfig, path: str | Path, example: torch.Tensor,
                raw: Callable[[nn.Module, torch.Tensor], Any] | None = None, opset: int = DEFAULT_OPSET,
                metadata: dict[str, Any] | None = None) -> OnnxExport:
    """Write ``qmodel`` (built by ``quantize_model`` with ``qconfig``, calibrated) to ``path`` as
    ONNX, atomically; batch, height and width stay dynamic where the model allows.

    ``raw(model, x)`` is what the graph computes (default ``model(x)``; a task's raw outputs,
    e.g. a detector's per-level head maps); ``example`` (N, C, H, W) is the traced input. The graph's
    metadata (``zaqbench.*``) holds the protocol, the representation, the output structure and
    ``metadata``. The written graph is run once with onnxruntime on ``example`` and compared with
    the frozen torch model, which is itself checked equal to ``qmodel``."""
    check_exportable(qconfig, opset)
    raw = raw or (lambda m, x: m(x))
    device = example.device
    frozen = frozen_copy(qmodel).to(device)
    wrapped = RawOutputs(frozen, raw).eval()
    with torch.no_grad():
        expected, structure = flatten_outputs(raw(qmodel.eval(), example))
        got = wrapped(example)
    for a, b in zip(expected, got):
        if not torch.equal(a, b):  # the frozen grids must be Q's own
            raise RuntimeError("the frozen copy differs from the quantized model; the export would not be exact")
    rep = representation(qconfig, opset)
    meta = {"format": "zaqbench-onnx-qdq", "representation": rep, "qconfig": json.dumps(qconfig.to_dict(), sort_keys=True),
            **(metadata or {})}
    try:
        diff = write_graph(wrapped, example, path, opset, structure, expected, meta, _translations(opset))
    finally:
        frozen.to("cpu")
    return OnnxExport(Path(path), opset, rep, structure, diff, meta)


def export_float_onnx(model: nn.Module, path: str | Path, example: torch.Tensor,
                      raw: Callable[[nn.Module, torch.Tensor], Any] | None = None, opset: int = DEFAULT_OPSET,
                      metadata: dict[str, Any] | None = None) -> OnnxExport:
    """The full-precision ``model`` as ONNX, written as :func:`export_onnx` writes a quantized one
    (the reference of a deployed speed comparison)."""
    check_opset(opset)
    raw = raw or (lambda m, x: m(x))
    wrapped = RawOutputs(copy.deepcopy(model).eval().requires_grad_(False), raw).eval()
    with torch.no_grad():
        expected, structure = flatten_outputs(wrapped(example))
    meta = {"format": "zaqbench-onnx-float", "representation": "float32", **(metadata or {})}
    diff = write_graph(wrapped, example, path, opset, structure, expected, meta, {})
    return OnnxExport(Path(path), opset, "float32", structure, diff, meta)


def write_graph(wrapped: nn.Module, example: torch.Tensor, path: str | Path, opset: int, structure: Any,
                expected: list[torch.Tensor], metadata: dict[str, Any], translations: dict) -> float:
    """Export ``wrapped`` (flat tuple outputs) with batch, height and width dynamic where the model
    allows, weights stored as integers, ``metadata`` as ``zaqbench.*`` properties; write it to
    ``path`` atomically and return the largest |torch - onnxruntime| on ``example``."""
    import onnx

    meta = {"opset": str(opset), "output_structure": json.dumps(structure),
            "input_shape": json.dumps(list(example.shape[1:])),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped.cpu(), (example.cpu(),), input_names=[INPUT_NAME],
                output_names=[f"output_{i}" for i in range(len(expected))], opset_version=opset,
                dynamo=True, external_data=False,
                # batch, height and width stay symbolic wherever the model allows it (AUTO: no error where not)
                dynamic_shapes={"x": {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}},
                custom_translation_table=translations, verbose=False, report=False)
        proto = program.model_proto
        written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if written != opset:  # the exporter keeps its own opset where it cannot convert
            raise UserError(f"the torch exporter wrote opset {written}, not {opset}; use --onnx-opset {written}")
        store_weights_as_integers(proto)
        name_dynamic_axes(proto, ("batch", "height", "width"))
        onnx.helper.set_model_props(proto, {META_PREFIX + k: v for k, v in meta.items()})
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        diff = _compare(tmp, example.cpu(), [t.cpu() for t in expected])
        replace_keeping_mode(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return diff


def name_dynamic_axes(model: "onnx.ModelProto", names: Sequence[str]) -> None:
    """Rename the symbols of the input's dynamic axes (the exporter's ``s0``, ``s53``...) to
    ``names``, everywhere they appear in the graph's shapes (outputs read e.g. ``height // 8``)."""
    import re

    dims = model.graph.input[0].type.tensor_type.shape.dim
    mapping = {d.dim_param: new for d, new in zip([dims[0], *dims[2:]], names) if d.dim_param}
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


def store_weights_as_integers(model: "onnx.ModelProto") -> int:
    """Fold every QuantizeLinear (and integer Clip) whose inputs are all constants, i.e. each
    weight's Q [-> Clip], into the integer initializer it yields, leaving the weight's
    DequantizeLinear: the usual QDQ layout (integer weights in the file, a quarter of the float
    size), which runtimes read as a quantized weight. Values are the reference implementation's
    (``onnx.reference``); the weights are on their grid, so it computes torch's integers. Returns
    how many nodes were folded."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    kept, folded = [], 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in ("QuantizeLinear", "Clip") and inputs and all(name in constants for name in inputs):
            tensors = [constants[name] for name in inputs]
            inits = [helper.make_tensor(f"in{i}", t.data_type, t.dims, vals=t.raw_data or numpy_helper.to_array(t).flatten(),
                                        raw=bool(t.raw_data)) for i, t in enumerate(tensors)]
            single = helper.make_graph(
                [helper.make_node(node.op_type, [f"in{i}" for i in range(len(inputs))], ["out"],
                                  **{a.name: helper.get_attribute_value(a) for a in node.attribute})],
                "fold", [], [helper.make_tensor_value_info("out", tensors[0].data_type if node.op_type == "Clip"
                                                           else tensors[2].data_type, None)], inits)
            [value] = ReferenceEvaluator(helper.make_model(single, opset_imports=model.opset_import)).run(None, {})
            folded_tensor = numpy_helper.from_array(value, node.output[0])
            graph.initializer.append(folded_tensor)
            constants[node.output[0]] = folded_tensor
            folded += 1
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return folded


def _compare(path: str | Path, example: torch.Tensor, expected: list[torch.Tensor]) -> float:
    outputs = OrtGraph(path, threads=1).run(example.numpy())
    return max((float((torch.from_numpy(o) - e).abs().max()) for o, e in zip(outputs, expected)), default=0.0)
