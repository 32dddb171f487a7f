#!/usr/bin/env python
"""Regenerate the standard result grid: each task's default model x methods x
{W8A8, W6A6, W4A4} x seeds, appended to ``results/<task>.csv``.

Resumable: every finished run is one atomically appended row keyed by config
hash, method, bits and seed, and runs that already have their row are skipped
(``tools/run_task.py --skip-existing``), so a regeneration killed half way
continues where it stopped with no duplicated and no lost rows.

    python tools/regenerate.py [--task cls,det,seg] [--methods ...] [--bits 8,6,4] [--seeds 0]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zaqbench.runner import default_model  # noqa: E402

DEFAULT_METHODS = "fp,ptq,real-ptq,zeroq,zaq,zaq-no-feat,zaq-no-act,dfq,gdfq,dfq+zaq"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cls,det,seg", help="comma-separated tasks")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--bits", default="8,6,4")
    p.add_argument("--seeds", default="0")
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--dry-run", action="store_true", help="only print what would run")
    p.add_argument("--no-tables", action="store_true", help="do not rerender results/README.md afterwards")
    args, passthrough = p.parse_known_args()
    tasks = [t for t in args.task.split(",") if t]
    models = {t: default_model(t, ROOT / "configs") for t in tasks}
    unknown = [t for t, m in models.items() if m is None]
    if unknown:
        valid = sorted(p.parent.name for p in (ROOT / "configs").glob("*/DEFAULT"))
        print(f"error: no default model for task(s) {unknown}; tasks with one: {', '.join(valid)}", file=sys.stderr)
        return 2
    for task in tasks:
        for seed in [s for s in args.seeds.split(",") if s]:
            base = [sys.executable, str(ROOT / "tools" / "run_task.py"), "--task", task,
                    "--model", models[task], "--method", args.methods, "--bits", args.bits,
                    "--seed", seed, "--out", str(Path(args.results) / f"{task}.csv"), *passthrough]
            print(f"== {task}/{models[task]} seed {seed}: plan", flush=True)
            code = subprocess.call(base + ["--dry-run"])
            if code:
                return code
            if args.dry_run:
                continue
            code = subprocess.call(base + ["--skip-existing", "--resume"])
            if code:
                print(f"error: {task} seed {seed} stopped with exit code {code}; rerun to continue", file=sys.stderr)
                return code
    if not args.dry_run and not args.no_tables:
        return subprocess.call([sys.executable, str(ROOT / "tools" / "make_tables.py"), "--results", args.results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
