"""ZAQ's loop against the official ZAQ code's, on the same math, interleaved; rows to a CSV.

    zaqbench speed --official-code ZAQ-code --batch-sizes 64,256 --threads 1,2 --iters 2 --repeats 2
    zaqbench speed --relation-maps --batch-sizes 64 --threads 1      (the spatial relation maps alone)

The official code is not part of this repository: clone it
(``git clone https://github.com/FLHonker/ZAQ-code``) and pass its folder. From it the harness imports
the generator (``network/gan.py``), ResNet-20 (``network/resnet20.py``), the quantizer
(``quantization/quantize_model.py`` and ``quantization/quant_utils/``) and the SCRM relation loss
(``utils/loss.py``), skipping the packages' ``__init__`` files (they import visdom and pydot, which
the loop does not use), and runs ``train()`` of ``main.py`` itself, compiled from that file (importing
``main.py`` would connect to a visdom server). One call of ``train()`` with ``epoch_itrs=1`` is one
official iteration: 5 Q steps and one G step. Its ranges start from one generated batch (the
official code sets them on the CIFAR-10 test set; speed does not depend on them).

Ours is ``ZAQTrainer.step`` on the same math: the ``zaq-official`` method of
``configs/cls/resnet20_cifar10_paper.py`` (the official quantizer, ``zaq-code``; SGD on all of Q's
parameters; Q's BN in train mode; activation ranges widened on every forward), W4A4, 5 Q steps, with
``relation_guard='clamp'``: the official arithmetic without the zero-vector check.

For each (threads, batch) both arms are built from seed 0 on freshly initialised weights (speed
does not depend on trained ones) and run ``--warmup`` untimed iterations; then the arms alternate,
``--iters`` iterations each, ``--repeats`` times (A B A B), so load on the machine hits both alike.
Each block is one CSV row: wall and CPU (process) seconds per iteration, and the 1-minute load
average before and after it.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import copy
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import UserError
from .args import OneLineParser
from .lists import parse_list
from .results import append_rows

OFFICIAL_URL = "https://github.com/FLHonker/ZAQ-code"
#: the files of the official code the harness uses
OFFICIAL_FILES = ("main.py", "network/gan.py", "network/resnet20.py", "quantization/quantize_model.py",
                  "quantization/quant_utils/quant_modules.py", "quantization/quant_utils/quant_utils.py",
                  "utils/loss.py")
#: the name the official packages are imported under (their own names, network / utils / quantization, are
#: too common to claim in sys.modules)
ALIAS = "_zaq_official_code"
ARMS = ("official", "ours")
OFFICIAL_Q_STEPS = 5  # main.py's train(): for k in range(5)
MAP_ARMS = ("autograd", "chunked")
MODEL = "resnet20_cifar10_paper"  # the config whose zaq-official section is the official math
METHOD = "zaq-official"
COLUMNS = ["date", "commit", "official_commit", "torch", "cpu", "arm", "batch", "threads", "q_steps", "bits",
           "map_shape", "block", "iters", "wall_s_per_iter", "cpu_s_per_iter", "load_before", "load_after"]


def positive_ints(text: str, flag: str) -> list[int]:
    values = parse_list(text, flag, int, "64,256")
    if any(v < 1 for v in values):
        raise UserError(f"{flag} {text!r} is not valid; use positive integers separated by commas, e.g. 64,256")
    return values


def check_official_code(folder: Path) -> None:
    missing = [f for f in OFFICIAL_FILES if not (folder / f).is_file()]
    if missing:
        raise UserError(f"--official-code {folder} lacks {', '.join(missing)}; give the folder of a clone of the "
                        f"official code (git clone {OFFICIAL_URL})")


def _bare_package(name: str, folder: Path) -> None:
    """Register ``name`` as a package over ``folder`` without running its ``__init__.py``."""
    module = types.ModuleType(name)
    module.__path__ = [str(folder)]
    sys.modules[name] = module


def load_official(folder: Path) -> types.SimpleNamespace:
    """The official code's modules and its ``train`` function, from ``folder``."""
    check_official_code(folder)
    for name in [m for m in sys.modules if m == ALIAS or m.startswith(ALIAS + ".")]:
        del sys.modules[name]  # another folder loaded earlier in this process
    for package in ("", "network", "quantization", "quantization.quant_utils", "utils"):
        _bare_package(ALIAS + ("." + package if package else ""), folder.joinpath(*package.split(".")))
    gan = importlib.import_module(f"{ALIAS}.network.gan")
    resnet20 = importlib.import_module(f"{ALIAS}.network.resnet20")
    quantize_model = importlib.import_module(f"{ALIAS}.quantization.quantize_model").quantize_model
    loss = importlib.import_module(f"{ALIAS}.utils.loss")
    return types.SimpleNamespace(gan=gan, resnet20=resnet20, quantize_model=quantize_model,
                                 train=official_train(folder / "main.py", loss.SCRM))


class _NoPlot:
    """Stands in for the official code's visdom plotter."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass


def official_train(main_py: Path, scrm: type) -> Callable[..., None]:
    """``train`` of the official ``main.py``, compiled from its source with the names it uses (its
    log line and plot are silenced)."""
    import torch
    import torch.nn.functional as F

    tree = ast.parse(main_py.read_text(), filename=str(main_py))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train"]
    if not found:
        raise UserError(f"{main_py} has no function train(); use a clone of {OFFICIAL_URL}")
    namespace: dict[str, Any] = {"__builtins__": builtins, "torch": torch, "F": F, "SCRM": scrm, "vp": _NoPlot(),
                                 "print": lambda *args, **kwargs: None}
    exec(compile(ast.Module(body=found, type_ignores=[]), str(main_py), "exec"), namespace)
    return namespace["train"]


def official_step(official: types.SimpleNamespace, batch: int, bits: int) -> Callable[[], None]:
    """One official iteration as ``main()`` sets it up: ResNet-20 (10 classes), its copy P, Q from
    ``quantize_model``, the generator (nz 256, 32 px), SGD(0.1, momentum 0.9, weight decay 5e-4) on
    Q and Adam(1e-3) on G."""
    import torch

    args = argparse.Namespace(batch_size=batch, nz=256, device=torch.device("cpu"), alpha=1.0, beta=0.1,
                              epoch_itrs=1, log_interval=1, weight_bit=bits, activation_bit=bits)
    torch.manual_seed(0)
    q_model = official.resnet20.ResNet20(num_classes=10)
    generator = official.gan.Generator(nz=args.nz, nc=3, img_size=32)
    p_model = copy.deepcopy(q_model)
    q_model = official.quantize_model(q_model, args)
    with torch.no_grad():  # the activation ranges start from one generated batch
        q_model(generator(torch.randn(batch, args.nz, 1, 1)))
    opt_q = torch.optim.SGD(q_model.parameters(), lr=0.1, weight_decay=5e-4, momentum=0.9)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)

    def step() -> None:
        official.train(args, p_model=p_model, q_model=q_model, generator=generator, optimizer=[opt_q, opt_g],
                       epoch=1)
    return step


def relation_map_step(arm: str, shape: tuple[int, int, int], batch: int) -> Callable[[], None]:
    """A Q step's spatial relation maps of one layer: P's under no_grad, Q's with its backward,
    through the L1 between them; ``arm``: the one-graph autograd version or the chunked one."""
    import torch
    import torch.nn.functional as F

    from ..zaq.discrepancy import spatial_relation, spatial_relation_autograd

    relation = spatial_relation if arm == "chunked" else spatial_relation_autograd
    g = torch.Generator().manual_seed(0)
    p = F.normalize(torch.randn(batch, *shape, generator=g).relu(), dim=1)
    q = F.normalize(torch.randn(batch, *shape, generator=g).relu(), dim=1).requires_grad_(True)

    def step() -> None:
        with torch.no_grad():
            p_map = relation(p)
        F.l1_loss(relation(q), p_map).backward()
        q.grad = None
    return step


def _load() -> float:
    return os.getloadavg()[0]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_block(step: Callable[[], None], iters: int) -> tuple[float, float, float, float]:
    """(wall s/iter, process CPU s/iter, load before, load after) of ``iters`` calls of ``step``."""
    before = _load()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(iters):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / iters, cpu / iters, before, _load()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="zaqbench speed", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-code", type=Path, help=f"folder of a clone of {OFFICIAL_URL}")
    p.add_argument("--arms", help=f"what to time, interleaved (default: all): {', '.join(ARMS)}; with "
                                  f"--relation-maps: {', '.join(MAP_ARMS)}")
    p.add_argument("--relation-maps", action="store_true",
                   help="time one layer's spatial relation maps (P's forward, Q's forward and backward) instead "
                        "of whole iterations: the one-graph autograd version against the chunked one")
    p.add_argument("--map-shape", default="16,32,32", help="C,H,W of the feature map for --relation-maps "
                   "(default: ResNet-20's layer1 at 32 px)")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--threads", default="1,2", help="torch CPU threads, comma-separated")
    p.add_argument("--q-steps", type=int, default=5)
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits")
    p.add_argument("--iters", type=int, default=2, help="iterations per timed block")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations of each arm first")
    p.add_argument("--repeats", type=int, default=2, help="timed blocks per arm, alternating")
    p.add_argument("--out", type=Path, help="CSV the rows are appended to (default: results/speed/"
                                            "official_vs_ours.csv, or relation_maps.csv)")
    return p


def check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Every option checked before any work; the parsed lists."""
    valid = MAP_ARMS if args.relation_maps else ARMS
    arms = parse_list(args.arms, "--arms", str, ",".join(valid)) if args.arms is not None else list(valid)
    bad = [a for a in arms if a not in valid]
    if bad:
        raise UserError(f"--arms {args.arms!r} is not valid; choose from {', '.join(valid)}")
    for name in ("iters", "repeats", "q_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} is not valid; use a positive integer")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup} is not valid; use an integer >= 0")
    if not 2 <= args.bits <= 8:
        raise UserError(f"--bits {args.bits} is not valid; use 2 to 8")
    if "official" in arms and not args.relation_maps:
        if args.official_code is None:
            raise UserError(f"the official arm needs --official-code DIR, a clone of {OFFICIAL_URL} "
                            f"(git clone {OFFICIAL_URL}); or time ours alone with --arms ours")
        check_official_code(args.official_code)
        if args.q_steps != OFFICIAL_Q_STEPS:
            raise UserError(f"--q-steps {args.q_steps}: the official loop's Q steps are fixed at {OFFICIAL_Q_STEPS}; "
                            f"use --q-steps {OFFICIAL_Q_STEPS}, or time ours alone with --arms ours")
    try:  # a shape, not a list: its sides may repeat
        shape = tuple(int(side) for side in args.map_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--map-shape {args.map_shape!r} is not valid; give C,H,W, e.g. 16,32,32")
    return {"arms": arms, "batches": positive_ints(args.batch_sizes, "--batch-sizes"),
            "threads": positive_ints(args.threads, "--threads"), "shape": shape}


def run(args: argparse.Namespace) -> int:
    import torch

    from .bench import bench_trainer
    from .results import check_writable, git_commit
    from .runner import REPO_ROOT

    parsed = check_args(args)
    out = args.out or REPO_ROOT / "results" / "speed" / ("relation_maps.csv" if args.relation_maps else
                                                    "official_vs_ours.csv")
    check_writable(out, COLUMNS)  # before any timing
    official = load_official(args.official_code) if "official" in parsed["arms"] and not args.relation_maps \
        else None
    official_commit = ""
    if official is not None:
        try:
            official_commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=args.official_code,
                                             capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            official_commit = "unknown"
    common = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
              "official_commit": official_commit, "torch": torch.__version__, "cpu": cpu_name(),
              "q_steps": "" if args.relation_maps else args.q_steps, "bits": "" if args.relation_maps else args.bits,
              "map_shape": "x".join(map(str, parsed["shape"])) if args.relation_maps else "", "iters": args.iters}
    rows: list[dict[str, Any]] = []
    for threads in parsed["threads"]:
        torch.set_num_threads(threads)
        for batch in parsed["batches"]:
            with ExitStack() as stack:
                steps: dict[str, Callable[[], None]] = {}
                for arm in parsed["arms"]:
                    if args.relation_maps:
                        steps[arm] = relation_map_step(arm, parsed["shape"], batch)
                    elif arm == "official":
                        steps[arm] = official_step(official, batch, args.bits)
                    else:
                        bench_args = argparse.Namespace(task="cls", model=MODEL, bits=args.bits, batch_size=batch,
                                                        q_steps=args.q_steps, warmup=args.warmup, iters=args.iters,
                                                        cfg_options=[], device="cpu")
                        trainer = stack.enter_context(bench_trainer(bench_args, METHOD, {"relation_guard": "clamp"}))
                        steps[arm] = trainer.step
                for arm, step in steps.items():
                    for _ in range(args.warmup):
                        step()
                for block in range(args.repeats):
                    for arm, step in steps.items():  # interleaved: A B A B
                        wall, cpu, before, after = time_block(step, args.iters)
                        rows.append({**common, "arm": arm, "batch": batch, "threads": threads, "block": block,
                                     "wall_s_per_iter": round(wall, 4), "cpu_s_per_iter": round(cpu, 4),
                                     "load_before": round(before, 2), "load_after": round(after, 2)})
                        print(f"threads={threads} batch={batch} {arm} block {block}: {wall:.3f} s/iter wall, "
                              f"{cpu:.3f} s/iter CPU, load {before:.2f} -> {after:.2f}", file=sys.stderr)
    append_rows(out, rows, COLUMNS)  # locked and atomic, like every results CSV
    print(summary(rows, parsed["arms"]))
    print(f"[zaqbench] {len(rows)} rows appended to {out}", file=sys.stderr)
    return 0


def summary(rows: list[dict[str, Any]], arms: Sequence[str]) -> str:
    """Median wall and CPU seconds per iteration of each arm per (threads, batch), and the first
    arm's time over each other arm's (on a loaded machine the CPU times are the steadier)."""
    head = "| threads | batch | " + " | ".join(f"{a} wall / CPU (s/iter)" for a in arms) + \
        "".join(f" | {arms[0]} / {a} wall, CPU" for a in arms[1:]) + " |"
    lines = [head, "|---|---|" + "---|" * (2 * len(arms) - 1)]
    for key in dict.fromkeys((r["threads"], r["batch"]) for r in rows):
        med = {a: [statistics.median(r[col] for r in rows if (r["threads"], r["batch"]) == key and r["arm"] == a)
                   for col in ("wall_s_per_iter", "cpu_s_per_iter")] for a in arms}
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(f"{med[a][0]:.3f} / {med[a][1]:.3f}" for a in arms) +
                     "".join(f" | {med[arms[0]][0] / med[a][0]:.2f}x, {med[arms[0]][1] / med[a][1]:.2f}x"
                             for a in arms[1:]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from .runner import cli

    return cli(lambda: run(build_parser().parse_args(argv)), unfinished="speed row")
