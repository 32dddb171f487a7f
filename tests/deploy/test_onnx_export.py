"""The quantized model as ONNX with QDQ pairs: what the graph holds at each bit width, and that
onnxruntime computes what the fake-quantized model computes."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from zaqbench.deploy import check_exportable, export_onnx, frozen_copy, grid_storage, representation
from zaqbench.deploy.onnx_export import INT4_OPSET, GridStorage, runtime_error
from zaqbench.deploy.runtime import OrtGraph
from zaqbench.errors import UserError
from zaqbench.quant import QConfig, calibrate_activations, quant_layers, quantize_model


def small_cnn() -> nn.Module:
    """Stem, two 3x3 blocks with BN and ReLU6/ReLU, a depthwise conv, a classifier: 5 layers, the
    first and last kept in full precision by the default protocol."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def quantized(qconfig: QConfig, x: torch.Tensor) -> nn.Module:
    qmodel, _ = quantize_model(small_cnn(), qconfig, example_input=x[:1])
    calibrate_activations(qmodel, [x])
    return qmodel.eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("qconfig", [QConfig(wbits=4, abits=8), QConfig(wbits=8, abits=8, bn_fold=True),
                                     QConfig(wbits=3, abits=5, w_granularity="tensor", w_symmetric=False),
                                     QConfig(wbits=4, abits=4, a_placement="after-relu", first_fp=False)],
                         ids=["w4a8", "w8a8-folded", "w3a5-per-tensor-affine", "after-relu"])
def test_frozen_copy_computes_exactly_what_q_computes(qconfig, inputs):
    qmodel = quantized(qconfig, inputs)
    with torch.no_grad():
        assert torch.equal(frozen_copy(qmodel)(inputs), qmodel(inputs))


def test_grid_storage_is_exact_at_every_width():
    assert grid_storage(-128, 127, 21) == GridStorage(-128, 127, "int8", False)
    assert grid_storage(0, 255, 18) == GridStorage(0, 255, "uint8", False)
    assert grid_storage(-32, 31, 21) == GridStorage(-32, 31, "int8", True)  # 6 bits: Clip keeps the grid
    assert grid_storage(0, 3, 21) == GridStorage(0, 3, "uint8", True)
    assert grid_storage(0, 15, 20).onnx_type == "uint8"  # no 4-bit types before opset 21
    native = GridStorage(0, 15, "uint4", False)
    assert grid_storage(0, 15, INT4_OPSET) == (native if not runtime_error(native, INT4_OPSET) else
                                               GridStorage(0, 15, "uint8", True))
    assert representation(QConfig(wbits=6, abits=32), 21) == "W6:int8 QDQ + Clip[-32..31] per-channel/A32:float"


def exported(qconfig: QConfig, inputs: torch.Tensor, tmp_path, opset: int = 21):
    qmodel = quantized(qconfig, inputs)
    result = export_onnx(qmodel, qconfig, tmp_path / "q.onnx", inputs[:2], opset=opset)
    return qmodel, result, onnx.load(result.path)


def weight_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Each weight DequantizeLinear's value, computed from its integer initializer: (q - zp) * scale."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q, scale, zp = (inits[name].astype(np.float32) for name in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [-1 if d == axis else 1 for d in range(q.ndim)] if scale.ndim else []
            values[node.output[0]] = (q - zp.reshape(shape)) * scale.reshape(shape)
    return values


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_graph_holds_integer_weights_on_q_grid_and_runs_like_q(bits, inputs, tmp_path):
    qconfig = QConfig(wbits=bits, abits=bits)
    qmodel, result, model = exported(qconfig, inputs, tmp_path)
    ops = Counter(node.op_type for node in model.graph.node)
    layers = [layer for _, layer in quant_layers(qmodel)]
    assert len(layers) == 3  # first and last in full precision
    assert ops["QuantizeLinear"] == 3 and ops["DequantizeLinear"] == 6  # one Q per activation; weights stored as integers
    storage = grid_storage(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, 21)
    assert result.representation.startswith(f"W{bits}:{storage.describe()} per-channel")
    types = {i.data_type for i in model.graph.initializer if i.name in {n.input[0] for n in model.graph.node
                                                                         if n.op_type == "DequantizeLinear"}}
    assert types == {getattr(onnx.TensorProto, storage.onnx_type.upper())}
    # the weights the graph dequantizes are exactly Q's fake-quantized weights
    with torch.no_grad():
        expected = sorted(tuple(layer.weight_quant(layer.weight).flatten().tolist()) for layer in layers)
    assert sorted(tuple(v.flatten().tolist()) for v in weight_values(model.graph).values()) == expected
    assert result.max_abs_diff < 1e-4
    graph = OrtGraph(result.path)
    assert graph.metadata["representation"] == result.representation and graph.metadata["opset"] == "21"
    with torch.no_grad():
        ours, theirs = qmodel(inputs), graph.raw(inputs)  # a batch of another size than the export's
    assert theirs.shape == ours.shape
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert float((ours - theirs).abs().max()) < 1e-3 * float(ours.abs().max()) + 1e-5


def test_first_and_last_layers_stay_float_and_folded_bn_leaves_no_batchnorm(inputs, tmp_path):
    _, _, model = exported(QConfig(wbits=8, abits=8, bn_fold=True), inputs, tmp_path)
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["BatchNormalization"] == 0
    inits = {i.name: i for i in model.graph.initializer}
    first = model.graph.node[[n.op_type for n in model.graph.node].index("Conv")]
    assert first.input[0] == model.graph.input[0].name  # the image enters the stem unquantized
    assert inits[first.input[1]].data_type == onnx.TensorProto.FLOAT


def test_opset_below_21_stores_4_bits_as_8_bit_qdq_with_clip(inputs, tmp_path):
    qmodel, result, model = exported(QConfig(wbits=4, abits=4), inputs, tmp_path, opset=18)
    assert result.representation == "W4:int8 QDQ + Clip[-8..7] per-channel/A4:uint8 QDQ + Clip[0..15]"
    clips = [n for n in model.graph.node if n.op_type == "Clip" and n.input[0] in
             {m.output[0] for m in model.graph.node if m.op_type == "QuantizeLinear"}]
    assert len(clips) == 3
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
    bounds = {(int({**inits, **consts}[c.input[1]]), int({**inits, **consts}[c.input[2]])) for c in clips}
    assert bounds == {(0, 15)}
    assert model.opset_import[0].version == 18
    with torch.no_grad():
        assert (OrtGraph(result.path).raw(inputs).argmax(1) == qmodel(inputs).argmax(1)).all()


@pytest.mark.parametrize("qconfig, opset, match", [
    (QConfig.from_dict({"preset": "zaq-code"}), 21, "after subtracting the zero point"),
    (QConfig(wbits=8, abits=8), 13, "too old"),
    (QConfig(wbits=8, abits=8), 99, "newer than the installed onnx defines"),
])
def test_what_has_no_runnable_qdq_form_is_refused(qconfig, opset, match):
    with pytest.raises(UserError, match=match):
        check_exportable(qconfig, opset)


def test_nothing_is_left_behind_when_the_export_fails(inputs, tmp_path):
    qconfig = QConfig.from_dict({"preset": "zaq-code"})
    qmodel, _ = quantize_model(small_cnn(), qconfig, example_input=inputs[:1])
    calibrate_activations(qmodel, [inputs])
    with pytest.raises(UserError):
        export_onnx(qmodel, qconfig, tmp_path / "q.onnx", inputs[:2])
    assert list(tmp_path.iterdir()) == []


def test_a_bit_width_the_runtime_cannot_run_is_refused(monkeypatch):
    from zaqbench.deploy import onnx_export

    # a runtime without an integer Clip for uint8: 6-bit activations have no form it runs
    monkeypatch.setitem(onnx_export.RUNTIME_CHECKS, (GridStorage(0, 63, "uint8", True), 21), "no Clip(uint8) kernel")
    with pytest.raises(UserError, match=r"cannot run 6-bit uint8 QDQ \+ Clip\[0\.\.63\] at opset 21 \(no Clip"):
        check_exportable(QConfig(wbits=8, abits=6), 21)
    check_exportable(QConfig(wbits=6, abits=8), 21)  # 6-bit weights use int8, which it runs
