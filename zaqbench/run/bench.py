"""Throughput and peak memory of the ZAQ loop, with fake quantization on and off.

    zaqbench bench --task cls --model resnet20 --batch-size 64 --iters 5

Each mode runs in its own subprocess so its peak memory is its own. The ZAQ
settings are the model config's ``methods.zaq`` with the benchmark's batch size. The timed
loop is the real ``ZAQTrainer.step`` on a freshly initialised model (speed does
not depend on trained weights); the first ``--warmup`` iterations are not timed.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

def measure(args: argparse.Namespace, quant_on: bool) -> dict:
    import tempfile

    import torch

    from ..devices import resolve_device
    from ..engine import ZAQTrainer
    from ..quant import QConfig, quantize_model, set_quantization
    from ..registry import build_method, build_task
    from ..runner import REPO_ROOT, config_path, default_cache_dir, load_config, parse_cfg_options

    torch.manual_seed(0)
    cfg = load_config(config_path(args.task, args.model, None, REPO_ROOT / "configs"),
                      parse_cfg_options(args.cfg_options))
    device = resolve_device(args.device)
    adapter = build_task(args.task, cfg=cfg, model_name=args.model or args.task, data_root=None,
                         cache_dir=default_cache_dir(), device=device)
    teacher = adapter.build_model().eval()
    qmodel, _ = quantize_model(teacher, QConfig.from_dict(dict(cfg.get("quant", {}))).with_bits(args.bits, args.bits))
    # the model config's own ZAQ settings (pooling, generator width...), with the benchmark's batch,
    # as a job at the benchmark's bit width runs them (the recipe's bit-width rule resolved)
    zaq = build_method("zaq", **{**dict(cfg.get("methods", {}).get("zaq", {})), "batch_size": args.batch_size,
                                 "iters": args.warmup + args.iters, "q_steps": args.q_steps})
    zcfg = zaq.for_bits(args.bits, args.bits).zaq_config()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ZAQTrainer(adapter, teacher, qmodel, zcfg, Path(tmp), seed=0, progress=False)
        trainer.calibrate(1)
        set_quantization(qmodel, weight=quant_on, act=quant_on)
        for _ in range(args.warmup):
            trainer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.iters):
            trainer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"quant": quant_on, "it_per_s": args.iters / seconds, "s_per_it": seconds / args.iters,
            "peak_mib": round(peak, 1), "threads": torch.get_num_threads(), "device": str(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cls")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--q-steps", type=int, default=5)
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits of the timed model")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="alternate off/on this many times; the best is kept")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--cfg-options", nargs="+", default=[])
    p.add_argument("--_child", choices=["on", "off"], help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(measure(args, args._child == "on")))
        return 0
    results: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):  # interleaved, so machine noise hits both alike
            cmd = [sys.executable, "-m", "zaqbench.run.cli", "bench", *argv, "--_child", mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
    best = {m: max(r, key=lambda d: d["it_per_s"]) for m, r in results.items()}
    ratio = best["off"]["it_per_s"] / best["on"]["it_per_s"]
    print(f"task={args.task} model={args.model} batch={args.batch_size} q_steps={args.q_steps} "
          f"W{args.bits}A{args.bits} device={best['on']['device']} threads={best['on']['threads']}")
    print("| mode | it/s | s/it | peak memory (MiB) |")
    print("|---|---|---|---|")
    for mode, label in (("off", "quantization off"), ("on", "fake-quant on")):
        b = best[mode]
        print(f"| {label} | {b['it_per_s']:.3f} | {b['s_per_it']:.2f} | {b['peak_mib']:.0f} |")
    print(f"overhead ratio (on / off time per iteration): {ratio:.2f}x")
    return 0

