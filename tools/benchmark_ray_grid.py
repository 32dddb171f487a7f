#!/usr/bin/env python
"""The toy task's 4-job grid (fp and zaq x seeds 0, 1, W4A4) on a local Ray instance of 1 and of 2
CPUs, side by side: ``tools/regenerate.py --ray --ray-cpus N``, one thread per job, each run with its
own results and teacher cache. Prints the jobs' time (Ray started) and the whole command's.

    python tools/benchmark_ray_grid.py [--workers 1,2] [--zaq-iters 400]
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, time  # noqa: E401
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2", help="CPUs of the local Ray instance, one grid run each")
    p.add_argument("--zaq-iters", type=int, default=400, help="iterations of each zaq job")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "configs" / "toy").mkdir(parents=True)
        shutil.copy(ROOT / "tests" / "data" / "toy_config.py", Path(tmp) / "configs" / "toy" / "toy.py")
        (Path(tmp) / "configs" / "toy" / "DEFAULT").write_text("toy\n")
        print("| Ray CPUs (jobs at once) | jobs' wall time | whole command | speed-up (jobs) |\n|---|---|---|---|")
        first = None
        for n in args.workers.split(","):
            env = {**os.environ, "ZAQBENCH_CACHE": f"{tmp}/cache-{n}", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            start = time.perf_counter()
            done = subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate.py"), "--tasks", "toy",
                                   "--configs", f"{tmp}/configs", "--results", f"{tmp}/results-{n}", "--methods",
                                   "fp,zaq", "--seeds", "0,1", "--bits", "4", "--no-tables", "--no-progress",
                                   "--work-dir", f"{tmp}/work-{n}", "--ray", "--ray-cpus", n,
                                   "--cfg-options", f"methods.zaq.iters={args.zaq_iters}"],
                                  env=env, capture_output=True, text=True, check=True, cwd=ROOT)
            whole = time.perf_counter() - start
            jobs = float(re.search(r"-- ray: jobs done in ([\d.]+)s", done.stdout).group(1))
            first = first or jobs
            print(f"| {n} | {jobs:.1f} s | {whole:.1f} s | {first / jobs:.2f}x |", flush=True)
