"""Result tables: the CSVs of a results folder rendered as ``README.md`` (pandas).

Per task: rows = model x method, columns = bit widths, each cell the metric (mean ± std over
seeds) and its % of the FP reference; the protocol of the rows and the commit/date range under
each table. The output depends only on the CSVs, so rerunning on the committed CSVs reproduces the
committed file byte for byte. Bad lines (wrong column count, missing columns, unknown task,
unparsable numbers) are reported as ``file:line: reason`` and skipped.

Tasks and methods come from the registries: a task's section is titled by its adapter's ``title``
and a method's rows sit at its ``display_order`` with its ``table_note``. A task that is not
registered in this process (one registered through a config's ``custom_imports``) still gets its
section, titled by its key, from ``<results>/<task>.csv``; a row naming neither a registered task
nor the task its file is named after is reported as an unknown task, so a typo never opens a
section of its own.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from ..registry import TASKS, method_label, method_order, task_title
from .args import OneLineParser, add_args
from .runner import REPO_ROOT
from .results import COLUMNS, NOT_APPLICABLE, parse_deployment, probe_picks, read_csv_rows, read_frame

Warn = Callable[[str], None]

PROTOCOL = ["w_granularity", "w_symmetric", "a_symmetric", "a_range", "first_last_fp", "bn_folded", "quant_preset"]
NUMERIC = {"wbits": int, "abits": int, "value": float, "fp_value": float, "seed": int, "seconds": float,
           "iters": int}
#: results sub-folders rendered after the tasks' own tables, each with its heading
EXTRA_FOLDERS = (("threads", "Other thread counts"), ("fresh_clone", "A fresh clone with an empty cache"),
                 ("per_tensor", "Per-tensor weights (the setting DFQ was designed for)"),
                 ("gdfq_ablation", "GDFQ without the CE term on Q (methods.gdfq.q_ce_weight=0)"),
                 ("seg_budget", "Segmentation with ZAQ at 100 iterations and GDFQ at 300 (baselines "
                                "as in seg.csv)"),
                 ("components_and_ceiling", "ZAQ's components and the real-data ceiling, all rows from one "
                                            "machine and teacher"))
#: the hand-written index of a results folder, opening its README under this heading
INDEX = ("INDEX.md", "## What each file and folder answers")


def file_names_task(path: Path, task: str) -> bool:
    """Whether a CSV's name says it holds ``task``'s rows: ``<task>.csv`` or ``<task>_<what>.csv``."""
    return path.stem == task or path.stem.startswith(task + "_")


def task_files(results_dir: Path) -> list[tuple[str, Path]]:
    """The tasks' own CSVs, ``<results>/<task>.csv``: registered tasks in registration order, then
    every other top-level CSV (a task not registered here) by name."""
    registered = [(task, results_dir / f"{task}.csv") for task in TASKS.module_dict]
    others = sorted((path.stem, path) for path in results_dir.glob("*.csv") if path.stem not in TASKS.module_dict)
    return [(task, path) for task, path in registered + others if path.exists()]


def read_rows(path: Path, warn: Warn) -> list[dict]:
    """Valid rows of one CSV; every invalid line (bad bytes, torn, wrong values) is reported and skipped."""
    rows: list[dict] = []
    header, lines = read_csv_rows(path, warn)
    if header:
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            warn(f"{path}:1: header lacks column(s) {missing}; rows are read without them")
    for line_no, row in lines:
        if row.get("task") not in TASKS.module_dict and not file_names_task(path, str(row.get("task"))):
            warn(f"{path}:{line_no}: unknown task {row.get('task')!r}; skipped")
            continue
        try:
            for col, kind in NUMERIC.items():
                if col in row:
                    row[col] = kind(row[col])
        except ValueError as err:
            warn(f"{path}:{line_no}: {err}; skipped")
            continue
        if any(c not in row for c in ("model", "method", "wbits", "abits", "value", "fp_value")):
            warn(f"{path}:{line_no}: lacks a column needed for the table; skipped")
            continue
        rows.append(row)
    return rows


def latest_rows(rows: list[dict]) -> pd.DataFrame:
    """One row per table cell and seed, the latest one winning (a rerun with new code or config
    supersedes the older row). Rows of user data (``dataset`` = ``name@/path#fingerprint``) are
    cells of their own, labelled with the data, never merged with another data's rows."""
    df = pd.DataFrame(rows)
    user_data = df["dataset"].astype(str).str.contains("@")
    df.loc[user_data, "model"] = df.loc[user_data, "model"] + " on " + df.loc[user_data, "dataset"]
    return df.drop_duplicates(subset=["model", "method", "wbits", "abits", "seed"], keep="last")


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def cell(values: pd.Series, fp: pd.Series) -> str:
    """'mean ± std (pct%)'; metrics in [0, 1] (mAP) get three decimals, percentages two."""
    digits = 3 if fp.abs().max() <= 1 else 2
    pct = 100 * values / fp
    if len(values) > 1:
        return f"{_fmt(values.mean(), digits)} ± {_fmt(values.std(ddof=1), digits)} ({pct.mean():.1f}%)"
    return f"{_fmt(values.iloc[0], digits)} ({pct.iloc[0]:.1f}%)"


def na_cell(rows: pd.DataFrame) -> str | None:
    """'n/a (reason)' where every row of the cell is a method that could not apply (runner's n/a rows)."""
    calib = rows["calib_data"].astype(str) if "calib_data" in rows else pd.Series(dtype=str)
    if len(calib) and calib.str.startswith(NOT_APPLICABLE).all():
        return "n/a (" + calib.iloc[-1][len(NOT_APPLICABLE):] + ")"
    return None


def task_section(task: str, df: pd.DataFrame) -> str:
    df = df.copy()
    df["bits"] = "W" + df["wbits"].astype(str) + "A" + df["abits"].astype(str)
    # a rerun of the same cell (new code or config) supersedes the older row
    df = df.drop_duplicates(subset=["model", "method", "bits", "seed"], keep="last")
    bit_order = sorted(df.loc[df.method != "fp", "bits"].unique(), key=lambda b: -int(b[1:].split("A")[0]))
    if not bit_order:
        bit_order = ["W32A32"]
    metric = ", ".join(sorted(df["metric"].unique()))
    lines = [f"## {task_title(task)} (`{task}`), metric: {metric}", ""]
    header = ["model", "method", "FP"] + bit_order
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, method), g in sorted(df.groupby(["model", "method"]),
                                     key=lambda kv: (kv[0][0], method_order(kv[0][1]), kv[0][1])):
        fp_cell = cell(g["fp_value"].drop_duplicates(), g["fp_value"].drop_duplicates())
        cells = [model, method_label(method), fp_cell.split(" (")[0]]
        for bits in bit_order:
            sel = g[g["bits"] == bits]
            if method == "fp":
                cells.append("")
                continue
            cells.append(na_cell(sel) or cell(sel["value"], sel["fp_value"]) if len(sel) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: metric (% of the FP teacher of the same run); mean ± std where several seeds exist.")
    lines.append("")
    lines += deployed_lines(df)
    protos = df[df.method != "fp"][[c for c in PROTOCOL if c in df]].drop_duplicates()
    lines.append("Protocol of the quantized rows:")
    for _, p in protos.iterrows():
        lines.append("- " + ", ".join(f"{c}={p[c]}" for c in protos.columns))
    calib = df[["method", "calib_data"]].drop_duplicates().sort_values("method")
    lines.append("- calibration data: " + ", ".join(f"{m}: {c}" for m, c in calib.itertuples(index=False)))
    seeds = sorted(df["seed"].unique())
    lines.append(f"- seeds: {', '.join(map(str, seeds))}; rows: {len(df)}; "
                 f"commits: {', '.join(sorted(df['commit'].unique()))}; "
                 f"dates: {df['date'].min()[:10]} to {df['date'].max()[:10]}; device: "
                 f"{', '.join(sorted(df['device'].unique()))}")
    lines.append("")
    return "\n".join(lines)


def deployed_lines(df: pd.DataFrame) -> list[str]:
    """Where rows carry a deployed value (``--deploy-eval``): per model, method and bits, the simulated
    metric beside the metric of the exported ONNX graph, over the same rows (seeds), and how the
    graph was run. Nothing for rows without one."""
    info = df["extra_metrics"].fillna("").astype(str).map(parse_deployment) if "extra_metrics" in df else None
    if info is None or not info.map(bool).any():
        return []
    rows = df[info.map(bool)].copy()
    rows["deployed"] = [float(i["value"]) for i in info[info.map(bool)]]
    rows["how"] = [f"{i.get('runtime', '?')}, {i.get('threads', '?')} thread(s) on {i.get('cpu', '?')}, opset "
                   f"{i.get('opset', '?')}: {i.get('graph', '?')}" for i in info[info.map(bool)]]
    digits = 3 if df["fp_value"].abs().max() <= 1 else 2
    lines = ["Deployed (the exported ONNX graph with QDQ, scored by onnxruntime on the CPU) beside simulated "
             "(fake quantization in torch), same rows:", "",
             "| model | method | bits | simulated | deployed | deployed - simulated | runtime, graph |",
             "|---|---|---|---|---|---|---|"]
    for (model, method, bits), g in sorted(rows.groupby(["model", "method", "bits"]),
                                           key=lambda kv: (kv[0][0], method_order(kv[0][1]), kv[0][1], kv[0][2])):
        gap = (g["deployed"] - g["value"]).mean()
        lines.append(f"| {model} | {method_label(method)} | {bits} | {cell(g['value'], g['fp_value'])} | "
                     f"{cell(g['deployed'], g['fp_value'])} | {gap:+.{digits}f} | {'; '.join(sorted(set(g['how'])))} |")
    return lines + [""]


def rankings(df: pd.DataFrame, reference: str = "zaq") -> dict[tuple[str, str, str], tuple[float, float, str]]:
    """(model, bits, other method) -> (gap of the means, larger std, verdict) for ZAQ against each
    method with >= 2 seeds of both. A ranking ("ahead" / "behind") only where the gap exceeds the
    larger of the two standard deviations; otherwise "within the seed spread"."""
    df = df[(df.method != "fp") & df["value"].notna()].copy()  # n/a rows have no score to rank
    df["bits"] = "W" + df["wbits"].astype(str) + "A" + df["abits"].astype(str)
    found = {}
    for (model, bits), g in df.groupby(["model", "bits"]):
        ref = g[g.method == reference]["value"]
        if len(ref) < 2:
            continue
        for method, other in g[g.method != reference].groupby("method"):
            values = other["value"]
            if len(values) < 2:
                continue
            gap = ref.mean() - values.mean()
            spread = max(ref.std(ddof=1), values.std(ddof=1))
            verdict = ("ahead" if gap > 0 else "behind") if abs(gap) > spread else "within the seed spread"
            found[(model, bits, method)] = (gap, spread, f"{len(ref)}/{len(values)}", verdict)
    return found


def ranking_lines(df: pd.DataFrame, fresh: pd.DataFrame | None = None, reference: str = "zaq") -> list[str]:
    """The rankings of ``df``; with ``fresh`` (the same task's rows from a fresh clone) each line also
    says whether the fresh clone reproduces the verdict: a claim stands only where both agree."""
    found = rankings(df, reference)
    if fresh is not None:  # only rows of the same configs: a fresh row of an older config checks nothing here
        configs = set(zip(df["method"], df["wbits"].astype(str), df["abits"].astype(str), df["config_hash"]))
        fresh = fresh[[key in configs for key in zip(fresh["method"], fresh["wbits"].astype(str),
                                                     fresh["abits"].astype(str), fresh["config_hash"])]]
    again = rankings(fresh, reference) if fresh is not None and not fresh.empty else None
    digits = 3 if df["fp_value"].abs().max() <= 1 else 2
    lines = []
    for (model, bits, method), (gap, spread, seeds, verdict) in found.items():
        line = f"| {model} | {bits} | {method} | {gap:+.{digits}f} | {spread:.{digits}f} | {seeds} | {reference} {verdict} |"
        if again is not None:
            there = again.get((model, bits, method))
            line += f" {there[3] + (' (same)' if there[3] == verdict else ' (differs)') if there else 'not run (this config)'} |"
        lines.append(line)
    if not lines:
        return []
    header = "| model | bits | vs | gap (zaq - other) | larger std | seeds | verdict |"
    rule = "|---|---|---|---|---|---|---|"
    if again is not None:
        header, rule = header + " fresh clone |", rule + "---|"
    return ["Rankings (claimed only where the gap of the means exceeds the larger std over seeds):", "",
            header, rule, *lines, ""]


def worst_drops(g: pd.DataFrame, digits: int) -> str:
    """Per seed, the largest fall of the metric below that seed's iteration-0 value over its curve
    (0 if it never falls): whether training ever made the model worse than where it started."""
    drops = []
    for seed, run in g.drop_duplicates(subset=["seed", "iteration"], keep="last").groupby("seed"):
        start = run.loc[run["iteration"] == 0, "value"]
        if not start.empty:
            drops.append(f"{min(0.0, float((run['value'] - start.iloc[0]).min())):+.{digits}f} (s{seed})")
    return ", ".join(drops) or "–"


def curve_section(path: Path, title: str, warn: Warn) -> list[str]:
    """A budget-curve CSV as a table: one line per (model, method, bits, run options), the metric
    at each iteration as mean ± std over the seeds present, and each seed's worst drop below its
    iteration 0."""
    df = read_frame(path, warn)  # bad lines reported and skipped
    if df.empty:
        return []
    df["bits"] = "W" + df["wbits"].astype(str) + "A" + df["abits"].astype(str)
    df["cfg_options"] = df["cfg_options"].fillna("")
    points = sorted(df["iteration"].unique())
    digits = 3 if df["fp_value"].abs().max() <= 1 else 2
    lines = [f"### {title}", "", f"`{path.name}`, metric {df['metric'].iloc[0]}, FP "
             f"{_fmt(df['fp_value'].max(), digits)}; cells: mean ± std over seeds (n).", "",
             "| model | method | bits | run options | " + " | ".join(f"it {p}" for p in points)
             + " | worst drop below it 0 (seed) |",
             "|" + "---|" * (5 + len(points))]
    for (model, method, bits, options), g in df.groupby(["model", "method", "bits", "cfg_options"], sort=False):
        cells = []
        for point in points:
            values = g[g["iteration"] == point]["value"]
            if values.empty:
                cells.append("–")
            elif len(values) > 1:
                cells.append(f"{_fmt(values.mean(), digits)} ± {_fmt(values.std(ddof=1), digits)} ({len(values)})")
            else:
                cells.append(_fmt(values.iloc[0], digits))
        # no run options: the config as it was at the rows' commit(s), which a later change may have moved on
        shown = options.replace("methods.zaq.", "") or \
            f"(config as is at {', '.join(sorted(set(g['commit'].astype(str).str[:7])))})"
        lines.append(f"| {model} | {method} | {bits} | {shown} | " + " | ".join(cells)
                     + f" | {worst_drops(g, digits)} |")
    return lines + [""]


def probe_section(path: Path, warn: Warn) -> list[str]:
    """``tools/probe_snapshots.py`` rows as one line per run: the metric at iteration 0, at the best
    snapshot, and at the snapshot each probe set's lowest D_o would pick, with the rank correlation
    of -D_o and the metric (would a data-free choice of the returned iterate work?)."""
    df = read_frame(path, warn)
    if df.empty:
        return []
    digits = 3 if df["value"].abs().max() <= 1 else 2
    lines = [f"### {path.stem}", "", f"`{path.name}` (`tools/probe_snapshots.py`), metric {df['metric'].iloc[0]}; "
             "each probe set: the metric of the snapshot with the lowest D_o against P (its iteration), and the "
             "rank correlation of -D_o with the metric over the snapshots.", "",
             "| model | method | bits | seed | it 0 | best (iteration) | initial-G probes | final-G probes |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, method, wbits, abits, seed), g in df.groupby(["model", "method", "wbits", "abits", "seed"], sort=False):
        g = g.drop_duplicates(subset=["iteration"], keep="last")

        def at(row) -> str:
            return f"{_fmt(row['value'], digits)} (it {int(row['iteration'])})"

        cells = [_fmt(g.loc[g["iteration"].idxmin(), "value"], digits), at(g.loc[g["value"].idxmax()])]
        cells += [f"{at(picked)}, ρ {rho:+.2f}" for rho, picked in probe_picks(g).values()]
        lines.append(f"| {model} | {method} | W{wbits}A{abits} | {seed} | " + " | ".join(cells) + " |")
    return lines + [""]


def curve_file_kind(path: Path) -> str:
    """Which tool wrote a CSV of ``curves/``, read from its header rather than its name:
    'selection' (``probe_snapshots.py --selection-z``), 'probes' (``probe_snapshots.py``) or 'curve'."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = set(f.readline().strip().split(","))
    if "probe_z" in header:
        return "selection"
    if "d_o_initial_g" in header:
        return "probes"
    return "curve"


def selection_section(path: Path, warn: Warn) -> list[str]:
    """Selection-replay rows as one line per run and margin: the metric at iteration 0, the last
    iterate's at the run's last point, and what the rule returns there (and which iterate)."""
    df = read_frame(path, warn)
    if df.empty:
        return []
    for column in ("probe_z", "last_value", "returned_iteration"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df.dropna(subset=["probe_z", "last_value", "returned_iteration"])
    if df.empty:
        return []
    digits = 3 if df["value"].abs().max() <= 1 else 2
    last = int(df["iteration"].max())
    lines = [f"### {path.stem}", "", f"`{path.name}`, metric {df['metric'].iloc[0]}, at iteration {last} unless "
             "said otherwise.", "",
             "| model | method | bits | seed | z | it 0 | last iterate | returned (iteration) |",
             "|---|---|---|---|---|---|---|---|"]
    keys = ["model", "method", "wbits", "abits", "seed", "probe_z"]
    for (model, method, wbits, abits, seed, z), g in df.groupby(keys, sort=False):
        g = g.drop_duplicates(subset=["iteration"], keep="last").set_index("iteration")
        end = int(g.index.max())
        at = f" at it {end}" if end != last else ""
        start = _fmt(g.loc[g.index.min(), "value"], digits)
        lines.append(f"| {model} | {method} | W{wbits}A{abits} | {seed} | {z:g} | {start} | "
                     f"{_fmt(g.loc[end, 'last_value'], digits)}{at} | "
                     f"{_fmt(g.loc[end, 'value'], digits)} (it {int(g.loc[end, 'returned_iteration'])}){at} |")
    return lines + [""]


def render(results_dir: Path, warn: Warn) -> str:
    """The whole ``README.md`` for a results folder; each bad line goes to ``warn``."""
    parts = ["# zaqbench results", "",
             "Generated by `python tools/make_tables.py` from the CSVs in this folder; "
             "the rows were written by `tools/run_task.py` (see `tools/regenerate.py`).", ""]
    index = results_dir / INDEX[0]
    if index.exists():  # its own first line is its title; the rest goes under the README's heading
        parts += [INDEX[1], *index.read_text().strip().splitlines()[1:], ""]
    for task, path in task_files(results_dir):
        rows = read_rows(path, warn)
        if not rows:
            continue
        df = latest_rows(rows)
        fresh_path = results_dir / "fresh_clone" / f"{task}.csv"
        fresh_rows = read_rows(fresh_path, warn) if fresh_path.exists() else []
        parts.append(task_section(task, df))
        parts.extend(ranking_lines(df, latest_rows(fresh_rows) if fresh_rows else None))
        for plot in (f"{task}_bits.png", f"{task}_generated.png", f"{task}_losses.png"):
            if (results_dir / plot).exists():
                parts.append(f"![{plot}]({plot})")
        parts.append("")
    for folder, title in EXTRA_FOLDERS:
        for path in sorted((results_dir / folder).glob("*.csv")):
            rows = read_rows(path, warn)
            if not rows:
                continue
            df = latest_rows(rows)
            section = task_section(rows[0]["task"], df)  # one level below its folder's heading
            parts += [f"## {title}: `{folder}/{path.name}`", "", "#" + section if section.startswith("## ") else section]
            parts.extend(ranking_lines(df))
    kinds = {path: curve_file_kind(path) for path in sorted((results_dir / "curves").glob("*.csv"))}
    probes = [path for path, kind in kinds.items() if kind == "probes"]
    selections = [path for path, kind in kinds.items() if kind == "selection"]
    curves = [path for path, kind in kinds.items() if kind == "curve"] + \
        sorted((results_dir / "ablations").glob("*.csv"))
    if curves:
        parts += ["## Budget curves and stabiliser ablations", "",
                  "Written by `tools/budget_curve.py`: one run of max(points) iterations per seed, "
                  "evaluated from its snapshots after training.", ""]
        for path in curves:
            parts.extend(curve_section(path, path.stem, warn))
            if path.with_suffix(".png").exists():
                parts += [f"![{path.stem}]({path.parent.name}/{path.with_suffix('.png').name})", ""]
    probe_checks = [
        (probes, probe_section, "Choosing the returned iterate on generated probes",
         "A data-free choice of which snapshot a run returns can only work if D_o against P on "
         "fixed generated probes tracks the metric; this checks it on the curve runs' snapshots."),
        (selections, selection_section, "What the distilled-probe selection returns",
         "Written by `tools/probe_snapshots.py --selection-z` on runs that return their last iterate: "
         "the rule `returned_iterate='probe'` with margin `probe_z=z`, replayed on their snapshots.")]
    for paths, section, title, intro in probe_checks:
        if paths:
            parts += [f"## {title}", "", intro, ""]
            for path in paths:
                parts.extend(section(path, warn))
    return "\n".join(parts).rstrip() + "\n"


def write_tables(results_dir: Path, out: str | None) -> int:
    """Render ``results_dir`` to ``out`` (default ``<results>/README.md``, written atomically;
    '-' prints); warnings and errors go to stderr. Returns the exit status."""
    if not results_dir.is_dir():
        print(f"error: results folder '{results_dir}' does not exist; pass the folder holding the "
              "CSVs with --results", file=sys.stderr)
        return 2
    problems: list[str] = []
    text = render(results_dir, problems.append)
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    if out == "-":
        sys.stdout.write(text)
    else:
        path = Path(out) if out else results_dir / "README.md"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(text)
            tmp.replace(path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            print(f"error: cannot write '{path}' ({err.strerror}); pass --out with a writable path, or - to print",
                  file=sys.stderr)
            return 2
        print(f"wrote {path}", file=sys.stderr)
    return 0


MAIN_DOC = """Render the result CSVs of a folder into its ``README.md``: one section per task (registered
tasks by their adapter's title; any other ``<task>.csv`` by its key), then the sub-folders'
tables, the budget curves and the probe checks. Bad lines are reported and skipped.

    python tools/make_tables.py [--results results] [--out results/README.md]
"""  # the command's --help


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=MAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_args(p, "results", "out", results=dict(default=str(REPO_ROOT / "results")),
                    out=dict(help="the page to write (default: <results>/README.md; '-' prints)"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return write_tables(Path(args.results), args.out)
