"""Deployed speed: onnxruntime latency and throughput of the FP32 graph against the exported W8A8 graph.

    zaqbench bench-deploy                       (ResNet-20, MobileNetV2 224, the det and seg defaults)
    zaqbench bench-deploy --models cls:resnet20 --batch-sizes 1 --threads 1 --rounds 1 --repeats 3

Each model is built with random weights (speed does not depend on them), exported once as FP32 and
once as W8A8 (its config's protocol with BN folded, activation ranges from Gaussian noise), and run
by onnxruntime on the CPU with all graph optimisations. Measurements are interleaved: every round
times each (model, batch, threads) with FP32 and W8A8 back to back, so a machine whose load drifts
slows both alike; a cell's latency is the median over all its timed runs. Which kernels onnxruntime
chose is read from the graph it writes after optimising (``SessionOptions.optimized_model_filepath``):
``QLinearConv`` where the QDQ pairs around a convolution were fused into an integer kernel.
One CSV row per (model, precision, batch, threads) goes to ``results/deploy/latency.csv``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .lists import parse_list

DEFAULT_MODELS = "cls:resnet20,cls:mobilenet_v2_imagenet,det:DEFAULT,seg:DEFAULT"
COLUMNS = ["task", "model", "precision", "graph", "batch", "threads", "input_shape", "latency_ms", "latency_p90_ms",
           "images_per_s", "timed_runs", "kernels", "qlinear_convs", "float_convs", "runtime", "cpu", "commit", "date"]
#: the operators counted as convolutions in the optimised graph (onnxruntime's own names included)
CONV_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "Conv@com.microsoft.nchwc"}


def build_parser() -> argparse.ArgumentParser:
    from .args import OneLineParser, add_args
    from .runner import REPO_ROOT

    p = OneLineParser(prog="zaqbench bench-deploy", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="comma list of task:config (DEFAULT: the task's default config)")
    p.add_argument("--batch-sizes", default="1,32", help="comma list of batch sizes")
    p.add_argument("--threads", default="1,all", help="comma list of onnxruntime intra-op thread counts; "
                                                        "'all' = every core of the machine")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over every cell")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per cell and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per cell before the first round")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of both graphs (default 21)")
    add_args(p, "out", "work_dir", "cfg_options",
             out=dict(default=str(REPO_ROOT / "results" / "deploy" / "latency.csv"), help="CSV to append to"),
             work_dir=dict(help="where the graphs are written (default: a temporary folder)"),
             cfg_options=dict(help="config overrides applied to every model, e.g. task.input_size=(64,64)"))
    return p


@dataclass
class Target:
    """One model to time: its task, config name, adapter and the two graphs."""

    task: str
    config: str
    adapter: Any
    graphs: dict[str, Path]  # precision -> ONNX file
    graph_text: dict[str, str]  # precision -> what the graph holds


def parse_targets(text: str) -> list[tuple[str, str]]:
    from .runner import REPO_ROOT, config_path, default_model

    targets = []
    for item in parse_list(text, "--models", str, "cls:resnet20,det:DEFAULT"):
        task, sep, name = item.partition(":")
        if not sep or not task or not name:
            raise UserError(f"--models item '{item}' is not task:config, e.g. cls:resnet20 or det:DEFAULT")
        if name == "DEFAULT":
            name = default_model(task) or ""
        config_path(task, name or None, None, REPO_ROOT / "configs")  # unknown task or config: one line
        targets.append((task, name))
    return targets


def thread_counts(text: str) -> list[int]:
    counts = [os.cpu_count() or 1 if item == "all" else item for item in parse_list(text, "--threads", str, "1,all")]
    try:
        counts = [int(c) for c in counts]
    except ValueError:
        raise UserError(f"--threads '{text}' must list positive integers or 'all', e.g. 1,all") from None
    if any(c < 1 for c in counts):
        raise UserError(f"--threads '{text}' must list positive integers or 'all', e.g. 1,all")
    return list(dict.fromkeys(counts))


def prepare(task: str, config: str, options: list[str], folder: Path, opset: int) -> Target:
    """Build the model with random weights and write its FP32 and W8A8 graphs into ``folder``."""
    import torch

    from ..deploy import export_onnx
    from ..deploy.onnx_export import export_float_onnx
    from ..quant import QConfig, calibrate_activations, quantize_model
    from ..registry import build_task
    from .runner import REPO_ROOT, config_path, default_cache_dir, load_config, parse_cfg_options

    cfg = load_config(config_path(task, config, None, REPO_ROOT / "configs"), parse_cfg_options(options))
    adapter = build_task(task, cfg=cfg, model_name=config, data_root=None, cache_dir=default_cache_dir(),
                         device=torch.device("cpu"))
    adapter.progress = False
    torch.manual_seed(0)
    model = adapter.build_model().eval()
    spec = adapter.input_spec
    example = torch.randn(2, *spec.shape(1)[1:], generator=torch.Generator().manual_seed(0))
    # deployment's protocol: the config's, 8 bits, BN folded into the convolutions (integer kernels need it)
    qconfig = QConfig.from_dict({**dict(cfg.get("quant", {})), "bn_fold": True}).with_bits(8, 8)
    qmodel, _ = quantize_model(model, qconfig, example_input=example[:1])
    noise = torch.Generator().manual_seed(1)
    calibrate_activations(qmodel, [torch.randn(8, *spec.shape(1)[1:], generator=noise) for _ in range(2)],
                          forward=adapter.forward_raw)
    stem = f"{task}_{config}"
    fp32 = export_float_onnx(model, folder / f"{stem}_fp32.onnx", example, raw=adapter.forward_raw, opset=opset)
    w8a8 = export_onnx(qmodel.eval(), qconfig, folder / f"{stem}_w8a8.onnx", example, raw=adapter.forward_raw,
                       opset=opset)
    return Target(task, config, adapter, {"fp32": fp32.path, "w8a8": w8a8.path},
                  {"fp32": "float32", "w8a8": w8a8.representation})


def kernels(path: Path, threads: int, folder: Path) -> tuple[Any, Counter]:
    """A session on ``path`` and the operators of its graph after onnxruntime's optimisations."""
    import onnx

    from ..deploy.runtime import OrtGraph

    optimized = folder / f"{path.stem}.t{threads}.optimized.onnx"
    graph = OrtGraph(path, threads=threads, optimized_path=optimized)
    ops = Counter(node.op_type + (f"@{node.domain}" if node.domain.endswith("nchwc") else "")
                  for node in onnx.load(optimized).graph.node)
    return graph, ops


def time_runs(graph: Any, x: Any, repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph.run(x)
        latencies.append(time.perf_counter() - start)
    return latencies


def main(argv: list[str] | None = None) -> int:
    from .runner import cli

    return cli(lambda: run(build_parser().parse_args(argv)), unfinished="benchmark row")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..deploy import DEFAULT_OPSET, check_opset
    from ..deploy.runtime import cpu_label, runtime_label
    from .results import append_rows, check_writable, git_commit, now_iso

    targets = parse_targets(args.models)
    batches = parse_list(args.batch_sizes, "--batch-sizes", int, "1,32")
    if any(b < 1 for b in batches):
        raise UserError(f"--batch-sizes '{args.batch_sizes}' must list positive integers, e.g. 1,32")
    threads = thread_counts(args.threads)
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be 0 or more, got {args.warmup}")
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    check_opset(opset)
    out = Path(args.out)
    check_writable(out, COLUMNS)
    with tempfile.TemporaryDirectory(prefix="zaqbench-deploy-") as tmp:
        folder = Path(args.work_dir) if args.work_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        prepared = []
        for task, config in targets:
            print(f"[bench-deploy] exporting {task}:{config} (FP32 and W8A8)", file=sys.stderr)
            prepared.append(prepare(task, config, args.cfg_options, folder, opset))
        sessions, ops = {}, {}
        for target in prepared:
            for precision, path in target.graphs.items():
                for n in threads:
                    sessions[target.config, precision, n], ops[target.config, precision, n] = kernels(path, n, folder)
        inputs = {(t.config, b): np.random.default_rng(0).standard_normal(
            (b, *t.adapter.input_spec.shape(1)[1:]), dtype=np.float32) for t in prepared for b in batches}
        for key, graph in sessions.items():  # warm-up: allocations, first-run caches
            for b in batches:
                for _ in range(args.warmup):
                    graph.run(inputs[key[0], b])
        runs: dict[tuple, list[float]] = {key + (b,): [] for key in sessions for b in batches}
        for r in range(args.rounds):
            print(f"[bench-deploy] round {r + 1}/{args.rounds}", file=sys.stderr)
            for target in prepared:
                for b in batches:
                    for n in threads:
                        for precision in target.graphs:  # FP32 and W8A8 back to back
                            runs[target.config, precision, n, b] += time_runs(
                                sessions[target.config, precision, n], inputs[target.config, b], args.repeats)
    rows, commit, cpu, date = [], git_commit(), cpu_label(), now_iso()
    for target in prepared:
        for precision in target.graphs:
            for b in batches:
                for n in threads:
                    latencies = sorted(runs[target.config, precision, n, b])
                    median = statistics.median(latencies)
                    used = ops[target.config, precision, n]
                    rows.append({
                        "task": target.task, "model": target.config, "precision": precision,
                        "graph": target.graph_text[precision], "batch": b, "threads": n,
                        "input_shape": "x".join(map(str, target.adapter.input_spec.shape(b)[1:])),
                        "latency_ms": round(1000 * median, 3),
                        "latency_p90_ms": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 3),
                        "images_per_s": round(b / median, 1), "timed_runs": len(latencies),
                        "kernels": " ".join(f"{op}:{k}" for op, k in sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))),
                        "qlinear_convs": used.get("QLinearConv", 0),
                        "float_convs": sum(k for op, k in used.items() if op in CONV_OPS),
                        "runtime": runtime_label(), "cpu": cpu, "commit": commit, "date": date})
    append_rows(out, rows, COLUMNS)
    print_rows(rows)
    print(f"[bench-deploy] {len(rows)} row(s) appended to {out}", file=sys.stderr)
    return 0


def print_rows(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    fp = df[df.precision == "fp32"].set_index(["model", "batch", "threads"])["latency_ms"]
    df["speed-up vs fp32"] = [round(fp[m, b, n] / lat, 2) for m, b, n, lat in
                              zip(df.model, df.batch, df.threads, df.latency_ms)]
    print(df[["model", "precision", "batch", "threads", "latency_ms", "images_per_s", "speed-up vs fp32",
              "qlinear_convs", "float_convs"]].to_string(index=False))
