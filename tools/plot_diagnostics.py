#!/usr/bin/env python
"""Compare the diagnostics of ZAQ runs (D_o, per-layer D_f, clipped activations, weight drift,
generated-image range, L_a) from their ``losses.jsonl``:

    tools/plot_diagnostics.py --out results/cls_diagnostics.png \
        official-cpu=work_dirs/cls/resnet20/zaq-w4a4-s0-<hash> stable=work_dirs/cls/resnet20/zaq-w4a4-s0-<hash>
"""
import argparse
import sys
from pathlib import Path

from zaqbench.run.curve_plots import plot_run_diagnostics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args()
    runs = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "losses.jsonl").is_file():
            print(f"error: '{item}' is not LABEL=RUN_DIR with a losses.jsonl in RUN_DIR", file=sys.stderr)
            return 2
        runs[label] = Path(folder)
    print(plot_run_diagnostics(runs, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
