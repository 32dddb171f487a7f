"""Plots drawn from what runs wrote: budget curves (CSV) and a run's diagnostics (losses.jsonl)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..zaq.loss_log import read_loss_log
from .results import read_frame


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(csv_path: Path, png_path: Path | None = None) -> Path:
    """Metric against iteration, mean +- std over seeds, one line per (method, bits, recipe)."""
    plt = _pyplot()
    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    df = read_frame(csv_path, lambda msg: print(f"warning: {msg}", file=sys.stderr))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (method, wbits, abits, chash), g in df.groupby(["method", "wbits", "abits", "config_hash"]):
        agg = g.groupby("iteration")["value"].agg(["mean", "std", "count"]).reset_index()
        label = f"{method} W{wbits}A{abits} [{chash[:6]}] ({int(agg['count'].max())} seeds)"
        ax.errorbar(agg["iteration"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", ms=3, capsize=3,
                    label=label)
    ax.axhline(df["fp_value"].max(), color="k", ls="--", lw=1, label="FP")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(-1, df["iteration"].max() * 1.15)
    ax.set_xlabel("ZAQ iteration")
    ax.set_ylabel(df["metric"].iloc[0])
    ax.set_title(f"{df['task'].iloc[0]} / {df['model'].iloc[0]}: budget curve")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def read_log(run_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(read_loss_log(Path(run_dir) / "losses.jsonl"))


def plot_run_diagnostics(run_dirs: dict[str, Path], png_path: Path) -> Path:
    """Six panels comparing runs (label -> run folder): D_o, per-layer D_f, clipped share,
    weight drift, generated-image range, L_a."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for index, (label, run_dir) in enumerate(run_dirs.items()):
        log = read_log(run_dir)
        it = log["iter"]
        color = f"C{index}"  # one colour per run; line style tells the series apart
        axes[0, 0].plot(it, log["d_o"], color=color, label=label)
        if "d_f_layers" in log and len(log["d_f_layers"].iloc[0]):
            layers = pd.DataFrame(log["d_f_layers"].tolist())
            axes[0, 1].plot(it, layers.iloc[:, -1], color=color, label=f"{label}: deepest")
            axes[0, 1].plot(it, layers.iloc[:, 0], color=color, ls=":", label=f"{label}: shallowest")
        if "clipped" in log:
            clipped = pd.DataFrame(log["clipped"].tolist())
            axes[0, 2].plot(it, 100 * clipped.mean(axis=1), color=color, label=f"{label}: mean")
            axes[0, 2].plot(it, 100 * clipped.max(axis=1), color=color, ls=":", label=f"{label}: worst layer")
        if "w_drift" in log:
            axes[1, 0].plot(it, 100 * log["w_drift"], color=color, label=label)
        if "img_min" in log:
            axes[1, 1].plot(it, log["img_min"], color=color, label=f"{label}: min")
            axes[1, 1].plot(it, log["img_max"], color=color, ls=":", label=f"{label}: max")
        axes[1, 2].plot(it, log["l_a"], color=color, label=label)
    titles = ["D_o (output discrepancy)", "D_f per layer", "clipped activations (%)",
              "weight drift ||Wq-Wp||/||Wp|| (%)", "generated image range", "L_a (P's last features)"]
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.legend(fontsize=6)
    axes[1, 1].set_yscale("symlog")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
