"""Budget curves: a ZAQ run's metric at chosen iterations, from its own snapshots.

One run of ``max(points)`` iterations per (method, bits, seed) saves the model it
would return at every point (iteration 0 is the calibrated Q before any
training); each snapshot is then evaluated with the task's metric. Evaluation
happens after training and is for reporting only: it never feeds back into
training or into which iterate a run returns.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import distributed
from ..checkpoint import load_file
from ..errors import UserError
from ..methods import ZAQ, RunContext
from ..quant import layer_coverage, load_quantizer_state
from ..registry import method_class
from .locks import hold_run_folders
from .results import COLUMNS, append_rows, check_writable, git_commit
from .args import OneLineParser, add_args, add_common_args, parse_names
from .lists import parse_list
from .runner import REPO_ROOT, Job, Plan, build_plan, cli, keyed_rows, prepare_teacher, result_row, row_key, say

CURVE_COLUMNS = [c for c in COLUMNS if c not in ("iters", "seconds")]
CURVE_COLUMNS.insert(CURVE_COLUMNS.index("metric"), "iteration")
CURVE_COLUMNS.insert(CURVE_COLUMNS.index("config_hash"), "cfg_options")  # what the run changed (ablations)
DEFAULT_POINTS = "0,10,20,40,100,200,400"
#: how a run's snapshots are written again: a curve run with the same options, trained from the start
RETRAIN = "run tools/budget_curve.py with the same options, without --resume, to train the run again"


def parse_points(text: str) -> list[int]:
    """``--points 0,10,40`` -> [0, 10, 40], sorted; each >= 0, at least one > 0 (iteration 0 is
    the calibrated, untrained Q)."""
    points = sorted(parse_list(text, "--points", int, DEFAULT_POINTS))
    if points[0] < 0:
        raise UserError(f"--points has {points[0]}; every value must be >= 0")
    if points[-1] < 1:
        raise UserError("--points needs at least one iteration > 0")
    return points


def add_curve_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags that name a curve run: the plan's (:func:`zaqbench.run.args.add_common_args`), ZAQ-family
    methods, and the points."""
    add_common_args(p, methods=dict(default="zaq", help="comma-separated methods that train (ZAQ and its "
                                                        "ablations; default zaq; --method is the same flag)"))
    p.add_argument("--points", default=DEFAULT_POINTS,
                   help=f"iterations to evaluate (0 = calibrated, untrained Q); default {DEFAULT_POINTS}")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = add_curve_args(OneLineParser(
        description="Evaluate ZAQ runs at chosen iterations; rows go to results/curves/<task>_<model>.csv."))
    add_args(p, "resume", "skip_existing", "dry_run")
    p.add_argument("--no-plot", action="store_true", help="do not redraw the curve plot")
    return p


def trained_methods(arg: str) -> list[str]:
    names = parse_names(arg, "--methods", "zaq,zaq-no-feat")
    for name in names:
        if not issubclass(method_class(name), ZAQ):
            raise UserError(f"budget curves need methods that train (ZAQ and its ablations); "
                            f"'{name}' does not: use e.g. --methods zaq,zaq-no-feat,zaq-no-act")
    return names


def snapshot_path(run_dir: Path, iteration: int) -> Path:
    """Where a run saves the model it would return at ``iteration`` (``RunContext.snapshot_iters``)."""
    return run_dir / "snapshots" / f"iter_{iteration:06d}.pth"
def curve_plan(args: argparse.Namespace, points: list[int]) -> Plan:
    """The plan of the curve runs: each method trains to ``max(points)`` (part of its config hash)."""
    methods = trained_methods(args.methods)
    return build_plan(args, method_overrides={m: {"iters": max(points)} for m in methods})


def load_snapshot(plan: Plan, ctx: RunContext, job, iteration: int) -> torch.nn.Module:
    """The model a run saved at ``iteration`` (weights and activation ranges), in eval mode."""
    path = snapshot_path(ctx.work_dir, iteration)
    if not path.is_file():
        raise UserError(f"snapshot {path} is missing; {RETRAIN}")
    state = load_file(path, map_location=plan.device, remake=RETRAIN)
    qmodel = job.method.quantize(ctx)
    qmodel.load_state_dict(state["qmodel"])
    load_quantizer_state(qmodel, state["quantizer"])
    return qmodel.eval()


def returned_iteration(run_dir: Path, iteration: int) -> int:
    """Which iterate the run's snapshot at ``iteration`` holds (itself unless the run selects)."""
    state = load_file(snapshot_path(run_dir, iteration), map_location="cpu", remake=RETRAIN)
    return int(state.get("returned_iteration", iteration))


def evaluate_snapshot(plan: Plan, ctx: RunContext, job, iteration: int) -> dict[str, float]:
    return plan.adapter.evaluate(load_snapshot(plan, ctx, job, iteration))


CurveKey = tuple[str, str, int, int, int]  # Job.key: config hash (its iters is max(points)), method, bits, seed


def existing_points(path: Path) -> dict[CurveKey, set[int]]:
    """Curve key -> the iterations ``path`` already has rows for; bad lines are reported and skipped."""
    if not Path(path).exists():
        return {}
    done: dict[CurveKey, set[int]] = {}
    for row in keyed_rows(path):
        try:
            done.setdefault(row_key(row), set()).add(int(row["iteration"]))
        except (KeyError, TypeError, ValueError):
            continue  # a foreign line: the table tool reports it
    return done


def print_curve_plan(plan: Plan, seeds: list[int], points: list[int], done: dict[CurveKey, set[int]],
                     out: Path) -> None:
    """One line per (job, seed): whether ``out`` already has every requested point."""
    print(f"[zaqbench] curves to {out}, points {','.join(map(str, points))}:")
    finished = 0
    for seed in seeds:
        for job in plan.jobs:
            have = done.get(job.key(seed), set())
            missing = [p for p in points if p not in have]
            finished += not missing
            status = "done" if not missing else f"to run (missing {','.join(map(str, missing))})"
            print(f"  {job.method_name:12s} W{job.wbits}A{job.abits} seed {seed}  [{job.config_hash}]  {status}")
    print(f"  ({finished}/{len(seeds) * len(plan.jobs)} done)")


def run_curves(args: argparse.Namespace) -> Path:
    points = parse_points(args.points)
    out_arg = args.out
    args.out = None  # the plan checks the main results file; curves go elsewhere
    plan = curve_plan(args, points)
    seeds = plan.seeds
    out = Path(out_arg) if out_arg else REPO_ROOT / "results" / "curves" / f"{plan.task}_{plan.model_name}.csv"
    check_writable(out, CURVE_COLUMNS)
    done = existing_points(out) if args.dry_run or args.skip_existing else {}
    if args.dry_run:
        print_curve_plan(plan, seeds, points, done, out)
        return out
    runs = [(seed, job) for seed in seeds for job in plan.jobs]
    if args.skip_existing:  # a curve counts as done when every requested point has a row
        runs = [(seed, job) for seed, job in runs if not set(points) <= done.get(job.key(seed), set())]
        if not runs:
            print(f"[zaqbench] every requested curve already has its points in {out}", file=sys.stderr)
            return out

    # rank 0 holds the run folders and writes the rows for all ranks of a torchrun launch
    run_dirs = sorted({plan.run_dir(job, seed) for seed, job in runs}) if distributed.is_main() else []
    with hold_run_folders(run_dirs):  # the same curve run twice at once would share run folders
        write_curves(plan, args, runs, points, out)
    return out


def write_curves(plan: Plan, args: argparse.Namespace, runs: list[tuple[int, Job]], points: list[int],
                 out: Path) -> None:
    """Train each (seed, job) once to max(points) and append its whole curve to ``out``."""
    iters = max(points)
    teacher, fp_metrics = prepare_teacher(plan, args)
    fp_value = fp_metrics[plan.adapter.metric]
    commit = git_commit(config=Path(plan.cfg.filename))
    for seed, job in runs:
        ctx = RunContext(plan.adapter, teacher, job.qconfig, seed, plan.run_dir(job, seed), args.resume,
                         not args.no_progress and distributed.is_main(), snapshot_iters=tuple(points))
        say(f"[zaqbench] curve: {job.method_name} W{job.wbits}A{job.abits} seed {seed}, {iters} iterations")
        torch.manual_seed(seed)
        result = job.method.run(ctx)
        rows: list[dict[str, Any]] = []
        for it in points:
            metrics = evaluate_snapshot(plan, ctx, job, it)
            row = result_row(plan, job, seed, metrics, fp_value, result.calib_data, True, commit,
                             layer_coverage(result.model))
            row.update(iteration=it, cfg_options=";".join(args.cfg_options))
            returned = returned_iteration(ctx.work_dir, it)
            if returned != it:  # returned_iterate='probe' kept an earlier iterate
                row["extra_metrics"] = ";".join(filter(None, [row["extra_metrics"], f"returned_iteration={returned}"]))
            rows.append(row)
            say(f"[zaqbench]   iteration {it:5d}: {plan.adapter.metric} = {row['value']:.4f}")
        if distributed.is_main():
            append_rows(out, rows, CURVE_COLUMNS)  # the whole curve of a run, or nothing


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        out = run_curves(args)
        if args.dry_run:
            return 0
        if not args.no_plot and out.exists():
            from .curve_plots import plot_curves

            print(f"[zaqbench] plot: {plot_curves(out)}", file=sys.stderr)
        print(f"[zaqbench] curve rows in {out}", file=sys.stderr)
        return 0

    code = 1
    try:
        code = cli(work, unfinished="curve row")
        return code
    finally:
        distributed.shutdown(synchronize=code == 0)  # under torchrun, as tools/run_task.py does
