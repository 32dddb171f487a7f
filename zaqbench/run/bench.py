"""Throughput and peak memory of the ZAQ loop, with fake quantization on and off.

    zaqbench bench --task cls --model resnet20 --bits 8,4 --batch-size 64 --iters 5
    zaqbench bench --task cls --model resnet20 --batch-size 32 --profile   (where one step's time goes)

Each bit width and mode runs in its own subprocess so its peak memory is its own. The ZAQ
settings are the model config's ``methods.<--method>`` (default ``zaq``) with the benchmark's batch size. The timed
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..options import check_value, non_negative_int, positive_int
from .args import OneLineParser, add_args, parse_bits
from .lists import parse_list


@contextmanager
def bench_trainer(args: argparse.Namespace, method: str = "zaq",
                  overrides: dict[str, Any] | None = None) -> Iterator[Any]:
    """A ``ZAQTrainer`` for ``args``' task, model and bit width (``args.bits``, one integer) on a freshly initialised model
    (speed does not depend on trained weights), its activation ranges set on one batch.

    The ZAQ settings are the model config's ``methods.<method>`` with the benchmark's batch size and
    Q steps (and ``overrides``), as a job at the benchmark's bit width runs them (the recipe's
    bit-width rule resolved)."""
    import tempfile

    import torch

    from ..devices import resolve_device
    from ..quant import QConfig, quantize_model
    from ..registry import build_method, build_task
    from ..zaq.engine import ZAQTrainer
    from .runner import (
        REPO_ROOT,
        config_path,
        default_cache_dir,
        load_config,
        parse_cfg_options,
    )

    torch.manual_seed(0)
    cfg = load_config(config_path(args.task, args.model, None, REPO_ROOT / "configs"),
                      parse_cfg_options(args.cfg_options))
    device = resolve_device(args.device)
    adapter = build_task(args.task, cfg=cfg, model_name=args.model or args.task, data_root=None,
                         cache_dir=default_cache_dir(), device=device)
    teacher = adapter.build_model().eval()
    qmodel, _ = quantize_model(teacher, QConfig.from_dict(dict(cfg.get("quant", {}))).with_bits(args.bits, args.bits))
    zaq = build_method(method, **{**dict(cfg.get("methods", {}).get(method, {})), "batch_size": args.batch_size,
                                  "iters": args.warmup + args.iters, "q_steps": args.q_steps, **(overrides or {})})
    zcfg = zaq.for_bits(args.bits, args.bits).zaq_config()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ZAQTrainer(adapter, teacher, qmodel, zcfg, Path(tmp), seed=0, progress=False)
        trainer.calibrate(1)
        yield trainer


def measure(args: argparse.Namespace, quant_on: bool) -> dict:
    import torch

    from ..quant import set_quantization

    with bench_trainer(args, args.method) as trainer:
        device = trainer.device
        set_quantization(trainer.qmodel, weight=quant_on, act=quant_on)
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


def profile(args: argparse.Namespace) -> str:
    """One ZAQ step (after ``--warmup`` untimed ones) under torch.profiler, as a table of parts."""
    import os

    import torch

    from .step_profile import format_table, profile_step

    with bench_trainer(args, args.method) as trainer:
        for _ in range(args.warmup):
            trainer.step()
        wall, parts, _ = profile_step(trainer)
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    head = (f"task={args.task} model={args.model} method={args.method} batch={args.batch_size} q_steps={args.q_steps} "
            f"W{args.bits}A{args.bits} device={trainer.device} threads={torch.get_num_threads()} "
            f"load average (1/5/15 min) after: {load}")
    return head + "\n\n" + format_table(wall, parts)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, "task", "model", "methods", "bits", "device", "cfg_options",
             task=dict(required=False, default="cls"), model=dict(default="resnet20"),
             methods=dict(default="zaq", help="the one ZAQ-family method whose config section is timed "
                                              "(zaq, zaq-official, ...; --method is the same flag)"),
             bits=dict(default="4", help="comma-separated WbAb widths of the timed model, e.g. 8,4 (default: 4)"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--q-steps", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="alternate off/on this many times; the best is kept")
    p.add_argument("--profile", action="store_true",
                   help="profile one step (fake-quant on) and print where its time goes, instead of timing")
    p.add_argument("--_child", choices=["on", "off"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        widths = parse_bits(args.bits)
        methods = parse_list(args.methods, "--methods", str, "zaq")
        if len(methods) != 1:
            raise UserError(f"--methods {args.methods}: bench times one method; give one, e.g. --method zaq")
        args.method = methods[0]
        for flag in ("batch_size", "q_steps", "iters", "repeats"):
            check_value(positive_int, getattr(args, flag), "--" + flag.replace("_", "-"))
        check_value(non_negative_int, args.warmup, "--warmup")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args._child:
        args.bits = widths[0]
        print(json.dumps(measure(args, args._child == "on")))
        return 0
    for width in widths:
        if args.profile:
            print(profile(argparse.Namespace(**{**vars(args), "bits": width})))
        else:
            bench_width(args, argv, width)
    return 0


def bench_width(args: argparse.Namespace, argv: list[str], bits: int) -> None:
    """Time quantization off and on at W``bits``A``bits`` and print the table."""
    results: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):  # interleaved, so machine noise hits both alike
            # the child's --bits comes last, so it is the one that counts
            cmd = [sys.executable, "-m", "zaqbench.run.cli", "bench", *argv, "--bits", str(bits), "--_child", mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
    best = {m: max(r, key=lambda d: d["it_per_s"]) for m, r in results.items()}
    ratio = best["off"]["it_per_s"] / best["on"]["it_per_s"]
    print(f"task={args.task} model={args.model} method={args.method} batch={args.batch_size} q_steps={args.q_steps} "
          f"W{bits}A{bits} device={best['on']['device']} threads={best['on']['threads']}")
    print("| mode | it/s | s/it | peak memory (MiB) |")
    print("|---|---|---|---|")
    for mode, label in (("off", "quantization off"), ("on", "fake-quant on")):
        b = best[mode]
        print(f"| {label} | {b['it_per_s']:.3f} | {b['s_per_it']:.2f} | {b['peak_mib']:.0f} |")
    print(f"overhead ratio (on / off time per iteration): {ratio:.2f}x")
