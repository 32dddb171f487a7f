"""Would a data-free choice of the returned iterate work? A test on finished budget-curve runs.

A ZAQ run could return, instead of its last Q, the snapshot whose outputs agree best with P's
on a fixed set of generated probes (a candidate stabiliser). That only
helps if the probe discrepancy tracks the task metric. For each snapshot of a run that
``tools/budget_curve.py`` trained (same options, so the same run folder), this evaluates the
metric and D_o against P on two fixed probe sets, drawn with a seed of their own:

* ``d_o_initial_g``: images of the run's own untrained generator (what Q was calibrated on);
* ``d_o_final_g``: images of the run's generator at its end (``generator.pth``).

It never trains and never changes the run; the metric is read for reporting, as in the curves.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from . import distributed
from .checkpoint import load_file
from .curves import curve_parser, load_snapshot, parse_int_list, trained_methods
from .discrepancy import output_discrepancy
from .engine import ZAQTrainer
from .errors import UserError
from .methods import RunContext
from .results import append_rows, check_writable, git_commit, probe_picks
from .runner import REPO_ROOT, Plan, build_plan, cli, prepare_teacher, say

PROBE_SEED = 20_211_111  # the probes' own draws: never the run's training RNG
PROBE_COLUMNS = ["task", "model", "method", "wbits", "abits", "seed", "iteration", "metric", "value",
                 "d_o_initial_g", "d_o_final_g", "probe_images", "config_hash", "device", "commit"]


def probe_parser() -> argparse.ArgumentParser:
    p = curve_parser()
    p.description = ("D_o against P on fixed generated probes, beside the metric, for each snapshot of a "
                     "budget-curve run (give the same options as to tools/budget_curve.py)")
    p.add_argument("--probe-batches", type=int, default=4, help="generated batches per probe set (default 4)")
    return p


@torch.no_grad()
def probe_discrepancy(plan: Plan, model: torch.nn.Module, probes: list[tuple[torch.Tensor, Any]]) -> float:
    """Mean D_o of ``model`` against P's stored outputs over the probe batches."""
    model.eval()
    return sum(float(output_discrepancy(plan.adapter.forward_raw(model, x), p_out))
               for x, p_out in probes) / len(probes)


def draw_probes(plan: Plan, trainer: ZAQTrainer, teacher: torch.nn.Module, generator: torch.nn.Module,
                batches: int, seed: int) -> list[tuple[torch.Tensor, Any]]:
    """``batches`` generated batches (G in train mode, as the loop draws them) and P's outputs on them."""
    rng = torch.Generator(device=plan.device).manual_seed(PROBE_SEED + seed)
    generator.train()
    with torch.no_grad():
        images = [trainer.draw(rng, generator) for _ in range(batches)]
        return [(x, plan.adapter.forward_raw(teacher, x)) for x in images]


def run_probes(args: argparse.Namespace) -> Path:
    points = parse_int_list(args.points, "--points", 0)
    seeds = parse_int_list(args.seeds, "--seeds", 0) if args.seeds is not None else [args.seed]
    if args.dry_run or args.skip_existing:  # shared with budget_curve's parser; nothing here to plan or skip
        raise UserError("tools/probe_snapshots.py only reads a finished curve run's snapshots; "
                        "--dry-run and --skip-existing do not apply: drop them")
    if args.probe_batches < 1:
        raise UserError(f"--probe-batches must be a positive integer, got {args.probe_batches}")
    if distributed.env_world_size() > 1:  # every rank would evaluate and write the same rows
        raise UserError("tools/probe_snapshots.py runs in one process; start it without torchrun")
    args.method = ",".join(trained_methods(args.method))
    if max(points) < 1:
        raise UserError("--points needs at least one iteration > 0")
    out_arg, args.out = args.out, None
    plan = build_plan(args, method_overrides={m: {"iters": max(points)} for m in args.method.split(",")})
    out = Path(out_arg) if out_arg else REPO_ROOT / "results" / "curves" / f"probes_{plan.task}_{plan.model_name}.csv"
    check_writable(out, PROBE_COLUMNS)
    missing = [plan.run_dir(job, seed) for seed in seeds for job in plan.jobs
               if not (plan.run_dir(job, seed) / "generator.pth").is_file()]
    if missing:  # before the teacher is prepared: nothing to probe
        raise UserError(f"no finished run in {missing[0]}; run tools/budget_curve.py with the same options first")
    teacher, _ = prepare_teacher(plan, args)
    commit = git_commit(config=Path(plan.cfg.filename))
    for seed in seeds:
        for job in plan.jobs:
            run_dir = plan.run_dir(job, seed)
            ctx = RunContext(plan.adapter, teacher, job.qconfig, seed, run_dir, False, False)
            # the run's own initial generator: ZAQTrainer seeds with the run's seed before building it
            trainer = ZAQTrainer(plan.adapter, teacher, job.method.quantize(ctx), job.method.zaq_config(),
                                 run_dir, seed, progress=False)
            final_g = trainer.build_generator().to(plan.device)
            final_g.load_state_dict(load_file(run_dir / "generator.pth", map_location=plan.device))
            initial = draw_probes(plan, trainer, teacher, trainer.generator, args.probe_batches, seed)
            final = draw_probes(plan, trainer, teacher, final_g, args.probe_batches, seed)
            rows = []
            for it in points:
                model = load_snapshot(plan, ctx, job, it)
                metrics = plan.adapter.evaluate(model)
                rows.append({"task": plan.task, "model": plan.adapter.model_label, "method": job.method_name,
                             "wbits": job.wbits, "abits": job.abits, "seed": seed, "iteration": it,
                             "metric": plan.adapter.metric, "value": round(metrics[plan.adapter.metric], 4),
                             "d_o_initial_g": round(probe_discrepancy(plan, model, initial), 6),
                             "d_o_final_g": round(probe_discrepancy(plan, model, final), 6),
                             "probe_images": args.probe_batches * trainer.cfg.batch_size,
                             "config_hash": job.config_hash, "device": plan.device_label(), "commit": commit})
                say(f"[zaqbench]   iteration {it:5d}: {plan.adapter.metric} = {rows[-1]['value']:.4f}, "
                    f"D_o initial G {rows[-1]['d_o_initial_g']:.5f}, final G {rows[-1]['d_o_final_g']:.5f}")
            append_rows(out, rows, PROBE_COLUMNS)
            say(f"[zaqbench] {job.method_name} W{job.wbits}A{job.abits} seed {seed}: " + agreement(pd.DataFrame(rows)))
    return out


def agreement(rows: pd.DataFrame) -> str:
    """One run's :func:`probe_picks` as a line, beside the best snapshot."""
    parts = [f"{col}: rank correlation {rho:+.2f}, picks iteration {int(picked['iteration'])} ({picked['value']:.4f})"
             for col, (rho, picked) in probe_picks(rows).items()]
    best = rows.loc[rows["value"].idxmax()]
    return "; ".join(parts) + f"; best iteration {int(best['iteration'])} ({best['value']:.4f})"


def main(argv: Sequence[str] | None = None) -> int:
    args = probe_parser().parse_args(argv)

    def work() -> int:
        print(f"[zaqbench] probe rows in {run_probes(args)}", file=sys.stderr)
        return 0

    return cli(work, unfinished="probe row")
