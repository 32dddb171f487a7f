"""Running an exported graph with onnxruntime (CPU execution provider), and a torch view of it
that the task adapters score exactly as they score a torch model."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError

PROVIDER = "CPUExecutionProvider"
#: the metadata keys of an exported graph (``onnx.ModelProto.metadata_props``)
META_PREFIX = "zaqbench."
INPUT_NAME = "input"


def unflatten_outputs(values: Sequence[Any], structure: Any) -> Any:
    """The nested lists of ``structure`` (:func:`zaqbench.deploy.onnx_export.flatten_outputs`) filled with
    ``values`` in order."""
    it = iter(values)

    def build(s: Any) -> Any:
        return next(it) if s is None else [build(item) for item in s]

    return build(structure)


def runtime_label() -> str:
    """``onnxruntime-<version>``: the runtime a deployed number was measured with."""
    import onnxruntime

    return f"onnxruntime-{onnxruntime.__version__}"


def cpu_label() -> str:
    """The CPU model and its vector extensions that onnxruntime's integer kernels depend on
    (AVX-512 VNNI / AVX-VNNI dot products, else AVX2), e.g. ``AMD EPYC (avx2)``."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags]
    return f"{name} ({'/'.join(isa) or 'no avx2'})"


class OrtGraph:
    """An exported graph in an onnxruntime session on the CPU.

    ``threads``: intra-op threads (default: torch's thread count, so a run pinned to one thread
    stays on one); ``optimized_path``: where onnxruntime writes the graph after its optimisations
    (which kernels it chose)."""

    def __init__(self, path: str | Path, threads: int | None = None, optimized_path: str | Path | None = None,
                 level: str = "all") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        self.threads = int(threads or torch.get_num_threads())
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its notes on unused initializers and saved graphs are not news
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
        if optimized_path is not None:
            options.optimized_model_filepath = str(optimized_path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[PROVIDER])
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            raise UserError(f"onnxruntime cannot load '{path}': {str(err).strip().splitlines()[0][:300]}") from None
        self.metadata = {k[len(META_PREFIX):]: v for k, v in
                         self.session.get_modelmeta().custom_metadata_map.items() if k.startswith(META_PREFIX)}
        self.structure = json.loads(self.metadata.get("output_structure", "null"))
        self.input_name = self.session.get_inputs()[0].name if self.session.get_inputs() else INPUT_NAME

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs, flat, for a float32 (N, C, H, W) batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def raw(self, x: torch.Tensor) -> Any:
        """The outputs as torch tensors on ``x``'s device, nested as the torch model returned them."""
        outputs = [torch.from_numpy(o).to(x.device) for o in self.run(x.detach().cpu().numpy())]
        return outputs[0] if self.structure is None else unflatten_outputs(outputs, self.structure)


class DeployedRaw(nn.Module):
    """A module whose forward is a deployed graph's raw outputs: what a task adapter's
    ``evaluate`` scores where the torch model's forward is the raw output (classification)."""

    def __init__(self, raw: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self._raw = raw

    def forward(self, x: torch.Tensor) -> Any:
        return self._raw(x)
