"""An exported graph is usable where only onnxruntime and numpy are installed: a fresh Python
process that never imports torch (nor anything of this repository) runs it and reads its
metadata, and gets what the quantized model computes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.deploy.test_onnx_export import quantized
from zaqbench.deploy import export_onnx
from zaqbench.quant import QConfig

SCRIPT = """
import json, sys
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
x = np.load(sys.argv[2])
(logits,) = session.run(None, {session.get_inputs()[0].name: x})
np.save(sys.argv[3], logits)
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps({"representation": meta["zaqbench.representation"], "method": meta["zaqbench.method"],
                  "input_name": session.get_inputs()[0].name}))
"""


@pytest.mark.subprocess
def test_a_fresh_process_without_torch_runs_the_graph(tmp_path):
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    qconfig = QConfig(wbits=8, abits=8)
    qmodel = quantized(qconfig, x)
    result = export_onnx(qmodel, qconfig, tmp_path / "model.onnx", x[:2], metadata={"method": "ptq"})
    np.save(tmp_path / "x.npy", x.numpy())
    # -I: no PYTHONPATH, no user site, no current folder: only what is installed
    done = subprocess.run([sys.executable, "-I", "-c", SCRIPT, str(result.path), str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info == {"representation": "W8:int8 QDQ per-channel/A8:uint8 QDQ", "method": "ptq", "input_name": "input"}
    with torch.no_grad():
        expected = qmodel(x).numpy()
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape
    assert (got.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max() + 1e-5)
