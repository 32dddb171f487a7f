"""Would a data-free choice of the returned iterate work? A test on finished budget-curve runs.

A ZAQ run could return, instead of its last Q, the snapshot whose outputs agree best with P's
on a fixed set of generated probes (a candidate stabiliser). That only
helps if the probe discrepancy tracks the task metric. For each snapshot of a run that
``tools/budget_curve.py`` trained (same options, so the same run folder), this evaluates the
metric and D_o against P on two fixed probe sets, drawn with a seed of their own:

* ``d_o_initial_g``: images of the run's own untrained generator (what Q was calibrated on);
* ``d_o_final_g``: images of the run's generator at its end (``generator.pth``).

With ``--selection-z``, it instead replays ``returned_iterate='probe'`` on a run trained with
``'last'``: the run's own distilled probes (same seed, so the images a 'probe' run makes), every
snapshot scored on them, and at each point the iterate the selection would return, with its metric.
This needs a snapshot at every ``probe_interval`` up to the last point; one run then shows every
margin ``z`` without training again.

It never trains and never changes the run; the metric is read for reporting, as in the curves.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from .. import distributed
from ..checkpoint import load_file
from .args import OneLineParser
from .lists import parse_list
from .curves import RETRAIN, add_curve_args, curve_plan, load_snapshot, parse_points, snapshot_path
from ..zaq.discrepancy import output_discrepancy
from ..zaq.engine import ZAQTrainer
from ..zaq.selection import ProbeSelection
from ..errors import UserError
from ..options import check_value, non_negative, positive_int
from ..methods import RunContext
from .results import append_rows, check_writable, git_commit, probe_picks
from .runner import REPO_ROOT, Plan, cli, prepare_teacher, say

PROBE_SEED = 20_211_111  # the probes' own draws: never the run's training RNG
PROBE_COLUMNS = ["task", "model", "method", "wbits", "abits", "seed", "iteration", "metric", "value",
                 "d_o_initial_g", "d_o_final_g", "probe_images", "config_hash", "device", "commit"]


def build_parser() -> argparse.ArgumentParser:
    """The flags of the budget-curve command that name its runs (so the same run folders), and the probes'."""
    p = add_curve_args(OneLineParser(
        description="D_o against P on fixed generated probes, beside the metric, for each snapshot of a "
                    "budget-curve run (give the same options as to tools/budget_curve.py)",
        epilog="Reads finished runs only: the curve command's --resume, --skip-existing and --dry-run do not "
               "apply."))
    p.add_argument("--probe-batches", type=int, default=4, help="generated batches per probe set (default 4)")
    p.add_argument("--selection-z", default=None,
                   help="replay returned_iterate='probe' with these margins (comma-separated, e.g. 0,2) on runs "
                        "trained with 'last'; rows to --out (default results/curves/selection_<task>_<model>.csv)")
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


def check_snapshots(plan: Plan, seeds: list[int], points: list[int]) -> None:
    """Every (seed, job) run is finished and holds a snapshot at every requested point, or one line
    saying which is missing and the budget-curve command that writes it."""
    train = (f"tools/budget_curve.py with the same options and --points {','.join(map(str, points))} "
             "(without --resume: it trains the run again and saves a snapshot at each point)")
    for seed in seeds:
        for job in plan.jobs:
            run_dir = plan.run_dir(job, seed)
            if not (run_dir / "generator.pth").is_file():
                raise UserError(f"no finished run in {run_dir}; run {train} first")
            missing = [it for it in points if not snapshot_path(run_dir, it).is_file()]
            if missing:
                raise UserError(f"the run in {run_dir} has no snapshot at iteration(s) "
                                f"{','.join(map(str, missing))} (a curve run saves one at each of its --points); "
                                f"run {train}, then rerun this command")


SELECTION_COLUMNS = ["task", "model", "method", "wbits", "abits", "seed", "probe_z", "iteration",
                     "returned_iteration", "metric", "value", "last_value", "d_o_probe", "probe_images",
                     "config_hash", "device", "commit"]


def replay_selection(args: argparse.Namespace) -> Path:
    """The 'probe' selection replayed on finished 'last' runs, for each margin of ``--selection-z``."""
    points = parse_points(args.points)
    margins = parse_list(args.selection_z, "--selection-z", float, "0,2")
    for z in margins:
        check_value(non_negative, z, "--selection-z")
    out_arg, args.out = args.out, None
    plan = curve_plan(args, points)
    out = Path(out_arg) if out_arg else \
        REPO_ROOT / "results" / "curves" / f"selection_{plan.task}_{plan.model_name}.csv"
    check_writable(out, SELECTION_COLUMNS)
    for job in plan.jobs:
        cfg = job.method.zaq_config()
        if cfg.returned_iterate != "last":
            raise UserError(f"--selection-z replays the selection on runs that return their last iterate; "
                            f"add --cfg-options methods.{job.method_name}.returned_iterate=last (as the runs had)")
        scored = [it for it in range(0, points[-1] + 1, cfg.probe_interval)]
        if not set(scored) <= set(points):
            raise UserError(f"the selection scores iterations {','.join(map(str, scored))} "
                            f"(probe_interval {cfg.probe_interval}); --points must hold each of them")
    check_snapshots(plan, plan.seeds, points)
    teacher, _ = prepare_teacher(plan, args)
    commit = git_commit(config=Path(plan.cfg.filename))
    for seed in plan.seeds:
        for job in plan.jobs:
            rows = replay_run(plan, job, teacher, seed, points, margins, commit)
            append_rows(out, rows, SELECTION_COLUMNS)
    return out


def replay_run(plan: Plan, job, teacher: torch.nn.Module, seed: int, points: list[int], margins: list[float],
               commit: str) -> list[dict[str, Any]]:
    """One run's rows: for each margin and point, the iterate a 'probe' run would return and its metric."""
    cfg = job.method.zaq_config()
    ctx = RunContext(plan.adapter, teacher, job.qconfig, seed, plan.run_dir(job, seed), False, False)
    trainer = ZAQTrainer(plan.adapter, teacher, job.method.quantize(ctx), cfg, ctx.work_dir, seed, progress=False)
    images = trainer.probe_images()  # the run's own probes: the same seed, the same images
    models = {it: load_snapshot(plan, ctx, job, it) for it in points}
    values = {it: round(plan.adapter.evaluate(m)[plan.adapter.metric], 4) for it, m in models.items()}
    rows = []
    for z in margins:
        selection = ProbeSelection(teacher, images, plan.adapter.forward_raw, z)
        for it in points:
            if it % cfg.probe_interval == 0:
                selection.offer(it, models[it])
            _, returned = selection.choose(it, copy.deepcopy(models[it]))
            rows.append({"task": plan.task, "model": plan.adapter.model_label, "method": job.method_name,
                         "wbits": job.wbits, "abits": job.abits, "seed": seed, "probe_z": z, "iteration": it,
                         "returned_iteration": returned, "metric": plan.adapter.metric,
                         "value": values[returned], "last_value": values[it],
                         "d_o_probe": round(selection.score(models[it]), 6), "probe_images": len(images),
                         "config_hash": job.config_hash, "device": plan.device_label(), "commit": commit})
        say(f"[zaqbench] {job.method_name} W{job.wbits}A{job.abits} seed {seed}, z={z:g}: "
            + ", ".join(f"{r['iteration']}->{r['returned_iteration']} ({r['value']:g})" for r in rows[-len(points):]))
    return rows


def run_probes(args: argparse.Namespace) -> Path:
    points = parse_points(args.points)
    check_value(positive_int, args.probe_batches, "--probe-batches")
    if distributed.env_world_size() > 1:  # every rank would evaluate and write the same rows
        raise UserError("tools/probe_snapshots.py runs in one process; start it without torchrun")
    out_arg, args.out = args.out, None
    plan = curve_plan(args, points)
    seeds = plan.seeds
    out = Path(out_arg) if out_arg else REPO_ROOT / "results" / "curves" / f"probes_{plan.task}_{plan.model_name}.csv"
    check_writable(out, PROBE_COLUMNS)
    check_snapshots(plan, seeds, points)  # before the teacher is prepared: nothing to probe otherwise
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
            final_g.load_state_dict(load_file(run_dir / "generator.pth", map_location=plan.device,
                                              remake=RETRAIN))
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
    args = build_parser().parse_args(argv)

    def work() -> int:
        out = replay_selection(args) if args.selection_z else run_probes(args)
        print(f"[zaqbench] probe rows in {out}", file=sys.stderr)
        return 0

    return cli(work, unfinished="probe row")
