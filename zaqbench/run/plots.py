"""The result plots of a results folder: metric vs bit width per method (from each task's CSV),
images from the trained ZAQ generator and the ZAQ loss curves of each task's default run.

The generator images and loss curves come from the run folders the runner wrote
(``work_dirs/<task>/<model>/zaq-w4a4-s0-<hash>/generator.pth`` and ``losses.jsonl``): the folder
of the ZAQ W4A4 seed-0 row of the task's default model in the CSV, found by its config hash.
Drawing the generator's images builds the task's adapter, so the task must be registered.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ..checkpoint import load_file
from ..errors import UserError
from ..zaq.loss_log import read_loss_log
from .curve_plots import _pyplot
from .runner import REPO_ROOT, default_model, run_dir_name
from .args import OneLineParser, add_args, parse_names
from .tables import read_rows, task_files


def plot_bits(task: str, df: pd.DataFrame, out: Path) -> None:
    """Metric against bit width, mean ± std over seeds, one line per (model,) method."""
    df = df[df.method != "fp"].copy()
    df = df.drop_duplicates(subset=["model", "method", "wbits", "abits", "seed"], keep="last")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, method), g in df.groupby(["model", "method"]):
        agg = g.groupby("wbits")["value"].agg(["mean", "std"]).reset_index().sort_values("wbits")
        ax.errorbar(agg["wbits"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3,
                    label=f"{method}" if df.model.nunique() == 1 else f"{model} {method}")
    fp = df["fp_value"].max()
    ax.axhline(fp, color="k", ls="--", lw=1, label="FP")
    ax.set_xlabel("bits (WbAb)")
    ax.set_ylabel(df["metric"].iloc[0])
    ax.set_title(f"{task}: metric vs bit width")
    ax.set_xticks(sorted(df["wbits"].unique()))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def default_run(work_dir: Path, task: str, model: str, rows: list[dict]) -> Path | None:
    """The run folder of the ZAQ W4A4 seed-0 row in the CSV (matched by its config hash)."""
    hashes = [r["config_hash"] for r in rows if r["model"] == model and r["method"] == "zaq"
              and r["wbits"] == 4 and r["abits"] == 4 and r["seed"] == 0]
    if not hashes:
        return None
    run = work_dir / task / model / run_dir_name("zaq", 4, 4, 0, hashes[-1])
    return run if (run / "generator.pth").exists() else None


def plot_generated(task: str, model: str, run: Path, out: Path, n: int = 16,
                   configs: Path = REPO_ROOT / "configs") -> None:
    """A grid of images from the run's trained generator, denormalised with the task's input spec."""
    import torch

    from ..zaq.generator import Generator
    from ..registry import build_task
    from .runner import config_path, default_cache_dir, load_config

    plt = _pyplot()
    cfg = load_config(config_path(task, model, None, configs), {})
    adapter = build_task(task, cfg=cfg, model_name=model, data_root=None, cache_dir=default_cache_dir(),
                         device=torch.device("cpu"))
    spec = adapter.input_spec
    remake = f"rerun the ZAQ W4A4 seed-0 run of {task}/{model} (tools/run_task.py) to write it again"
    state = load_file(run / "generator.pth", remake=remake)
    nz = state["project.weight"].shape[1]
    channels = state["seed_bn.weight"].shape[0]
    # the head's output mode is in the run's config (no final BatchNorm: 'valid-range')
    output = json.loads(load_file(run / "checkpoint.pth", remake=remake)["config"]).get("gen_output", "bn")
    gen = Generator(spec, nz=nz, channels=channels, output=output)
    gen.load_state_dict(state)
    gen.train()  # batch statistics, as when Q trained on these images (engine.calibrate / the Q step)
    with torch.no_grad():
        x = gen(torch.randn(n, nz, generator=torch.Generator().manual_seed(0)))
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    img = (x * std + mean).clamp(0, 1)
    cols = 8
    fig, axes = plt.subplots(n // cols, cols, figsize=(cols * 1.2, n // cols * 1.2))
    for ax, im in zip(axes.flat, img):
        ax.imshow(im.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if im.shape[0] == 1 else None)
        ax.axis("off")
    fig.suptitle(f"{task}/{model}: images from the trained ZAQ generator (W4A4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_losses(task: str, run: Path, out: Path) -> None:
    """The ZAQ losses of one run against iteration: Q's loss, D_o and D_f, L_a."""
    plt = _pyplot()
    records = read_loss_log(run / "losses.jsonl")  # a torn last line (a killed run) is left out
    df = pd.DataFrame(records)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, cols in zip(axes, (["loss_q"], ["d_o", "d_f"], ["l_a"])):
        for c in cols:
            ax.plot(df["iter"], df[c], label=c)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.suptitle(f"{task}: ZAQ losses of the default run (W4A4, seed 0)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def make_plots(results: Path, work: Path, task_names: list[str] | None = None,
               configs: Path = REPO_ROOT / "configs") -> int:
    """Every plot ``results`` and ``work`` allow, for ``task_names`` (default: every task with a
    ``<task>.csv``, as the tables order them). Returns the exit status."""
    if not results.is_dir():
        print(f"error: results folder '{results}' does not exist; pass the folder holding the CSVs with --results",
              file=sys.stderr)
        return 2
    if task_names is None:
        task_names = [task for task, _ in task_files(results)]
    missing = [task for task in task_names if not (results / f"{task}.csv").exists()]
    if missing:
        have = ", ".join(task for task, _ in task_files(results)) or "none"
        print(f"error: no results for task(s) {', '.join(missing)} in '{results}' (tasks with a CSV: {have})",
              file=sys.stderr)
        return 2
    for task in task_names:
        csv_path = results / f"{task}.csv"
        rows = read_rows(csv_path, lambda m: print(f"warning: {m}", file=sys.stderr)) if csv_path.exists() else []
        if rows:
            plot_bits(task, pd.DataFrame(rows), results / f"{task}_bits.png")
            print(f"wrote {results / f'{task}_bits.png'}", file=sys.stderr)
        model = default_model(task, configs)
        run = default_run(work, task, model, rows) if model else None
        if run is None:
            print(f"note: no ZAQ W4A4 run of {task}/{model} under {work}; skipping its image and loss plots",
                  file=sys.stderr)
            continue
        plot_generated(task, model, run, results / f"{task}_generated.png", configs=configs)
        plot_losses(task, run, results / f"{task}_losses.png")
        print(f"wrote {task}_generated.png and {task}_losses.png from {run}", file=sys.stderr)
    return 0


MAIN_DOC = """Plots for ``results/``: metric vs bit width per method, images from the trained ZAQ generator,
and the ZAQ loss curves of each task's default run (``zaqbench.run.plots`` says which run).

    python tools/make_plots.py [--tasks cls,det,seg] [--work-dir work_dirs]

Without --tasks: every task with a ``<results>/<task>.csv``.
"""  # the command's --help


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=MAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_args(p, "tasks", "results", "work_dir",
                    tasks=dict(help="comma-separated tasks (default: every task with a CSV)"),
                    results=dict(default=str(REPO_ROOT / "results")),
                    work_dir=dict(default=str(REPO_ROOT / "work_dirs"), help="the run folders the plots read"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # bad input, or a run folder's file that cannot be read: one line
        names = parse_names(args.tasks, "--tasks", "cls,det") if args.tasks else None
        return make_plots(Path(args.results), Path(args.work_dir), names)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
