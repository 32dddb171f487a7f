"""The benchmark runner behind ``tools/run_task.py``.

Loads ``configs/<task>/<model>.py``, builds the task adapter, gets the teacher
(trained once and cached, or a user checkpoint), runs each method at each bit
width, evaluates it through the adapter, prints a table and appends one row
per run to ``results/<task>.csv``. A run that fails writes no row.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .. import distributed
from ..adapter import hashed_task
from ..data_identity import describe as describe_dataset
from ..devices import describe, resolve_device
from ..errors import UserError
from ..methods import MethodOutput, RunContext
from ..options import check_value
from ..quant import QConfig, check_quantizable, layer_coverage
from ..quant.qconfig import bit_width
from .args import OneLineParser, add_args, add_common_args, parse_bits, parse_names, parse_seeds
from .delivery import Delivery, deliver, plan_delivery
from .locks import hold_run_folders
from ..registry import METHODS, build_method, build_task, method_class, task_class
from ..progress import step_line
from .results import (COLUMNS, NOT_APPLICABLE, SHARED_SECONDS, append_rows, check_writable, format_deployment,
                      format_extra_metrics, format_layer_coverage, format_settings,
                      git_commit, now_iso, read_csv_rows, resolve_output)
from .teacher import get_teacher, teacher_cache_path, teacher_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
FP_BITS = 32
TEACHER_SEED = 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZAQBENCH_CACHE", Path.home() / ".cache" / "zaqbench"))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Run zaqbench methods on one task/model and append result rows.")
    add_common_args(p, methods=dict(help="comma-separated methods (default: all the config lists; "
                                         "--method is the same flag)"))
    add_args(p, "resume", "skip_existing", "dry_run")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also write each quantized model to DIR as a weights-only file "
                        "(zaqbench.export.load_quantized rebuilds it on the FP architecture) and as an ONNX "
                        "graph with QuantizeLinear/DequantizeLinear pairs (docs/export.md)")
    p.add_argument("--deploy-eval", action="store_true",
                   help="also score each quantized model's ONNX graph with onnxruntime (CPU) and record it in the "
                        "row as deployed_value; the files go to --export DIR, else to the run folder")
    p.add_argument("--onnx-opset", type=int, default=None, metavar="N",
                   help="opset of the exported ONNX graph (default 21: 4-bit grids as int4 where onnxruntime "
                        "runs them)")
    return p


def parse_cfg_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"malformed --cfg-options item '{item}'; expected KEY=VALUE, e.g. methods.zaq.iters=10")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        options[key] = value
    return options


def config_path(task: str, model: str | None, explicit: str | None, cfg_root: Path) -> Path:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"config file '{explicit}' does not exist")
        return path
    folder = cfg_root / task
    available = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    model = model or (available[0] if len(available) == 1 else None) or default_model(task, cfg_root)
    path = folder / f"{model}.py"
    if not path.is_file():
        raise UserError(f"unknown model '{model}' for task '{task}'; valid models: {', '.join(available) or '(none)'}")
    return path


def default_model(task: str, cfg_root: Path = REPO_ROOT / "configs") -> str | None:
    """The model named in ``configs/<task>/DEFAULT``, if the task has one."""
    marker = cfg_root / task / "DEFAULT"
    return marker.read_text().strip() if marker.is_file() else None


def run_dir_name(method: str, wbits: int, abits: int, seed: int, config_hash: str) -> str:
    """Folder (under ``work_dirs/<task>/<model>/``) of one run's checkpoints and losses."""
    return f"{method}-w{wbits}a{abits}-s{seed}-{config_hash}"


def parse_bit_pairs(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(wbits, abits) per job: ``--bits 8,6,4`` (W8A8, W6A6, W4A4), or ``--wbits``/``--abits`` (default 4)."""
    if args.bits is not None:
        if args.wbits is not None or args.abits is not None:
            raise UserError("--bits sets weight and activation bits together; use either --bits or "
                             "--wbits/--abits, not both")
        return [(b, b) for b in parse_bits(args.bits)]
    wbits, abits = (4 if bits is None else bits for bits in (args.wbits, args.abits))
    return [(check_value(bit_width, wbits, "--wbits"), check_value(bit_width, abits, "--abits"))]


def load_config(path: Path, options: dict[str, Any]):
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(path))
    except SystemExit as err:  # the config's own code called exit()
        raise UserError(f"config '{path}' exited (status {err.code}) while it was loaded; a config only "
                        "defines fields") from None
    except Exception as err:  # noqa: BLE001 - any parse/import error of the user's config
        msg = str(err).strip().splitlines()
        raise UserError(f"cannot load config '{path}': {msg[-1] if msg else type(err).__name__}") from None
    unknown = sorted({key.split(".")[0] for key in options} - set(cfg.keys()))
    if unknown:  # a typo such as foo.bar=1 would otherwise be silently ignored
        raise UserError(f"--cfg-options names unknown section(s) {unknown}; this config has: "
                        f"{', '.join(sorted(k for k in cfg.keys() if not k.startswith('_')))}")
    if options:
        try:
            cfg.merge_from_dict(options)
        except Exception as err:  # noqa: BLE001
            raise UserError(f"cannot apply --cfg-options: {err}") from None
    return cfg


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def method_list(arg: str | None, cfg) -> list[str]:
    if arg is not None:
        names = parse_names(arg, "--methods", "ptq,zaq")
    else:
        names = list(cfg.get("default_methods", [])) or sorted(METHODS.module_dict)
    for name in names:
        method_class(name)
    return names


def check_methods_section(cfg) -> None:
    """``methods`` must map registered method names to option dicts."""
    methods = cfg.get("methods", {})
    if not isinstance(methods, dict):
        raise UserError(f"config field 'methods' must map method names to option dicts, got {methods!r}")
    for name, section in methods.items():
        method_class(name)  # unknown name -> one line listing the registered methods
        if not isinstance(section, dict):
            raise UserError(f"methods.{name}={section!r} is not an option dict; set single options as "
                            f"methods.{name}.<option>=<value>")


def cli(work: Callable[[], int], unfinished: str = "result row") -> int:
    """Run ``work``; bad input is one ``error:`` line and exit status 2, Ctrl-C exit status 130."""
    try:
        return work()
    except UserError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line, not one per rank
            print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"error: interrupted; no {unfinished} was written for the unfinished run", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    code = 1
    try:
        code = cli(lambda: run(build_parser().parse_args(argv)))
        return code
    finally:
        distributed.shutdown(synchronize=code == 0)


@dataclass
class Plan:
    """Everything a run needs, built and validated before any teacher training or method run."""

    task: str
    model_name: str
    cfg: Any
    adapter: Any
    jobs: list["Job"]
    seeds: list[int]
    quant_preset: str
    out: Path
    device: torch.device
    cache_dir: Path
    work_root: Path
    #: wall time of the full-precision model's evaluation (``prepare_teacher``): the fp row's seconds
    fp_seconds: float = 0.0
    #: what each quantized job delivers besides its row (``--export``, ``--deploy-eval``)
    delivery: Delivery | None = None

    def run_dir(self, job: "Job", seed: int) -> Path:
        return self.work_root / self.task / self.model_name / run_dir_name(
            job.method_name, job.wbits, job.abits, seed, job.config_hash)

    def device_label(self) -> str:
        """The device and, on the CPU, torch's thread count: results move with both
        (and, under torchrun, the number of ranks)."""
        ranks = distributed.world_size()
        return describe(self.device) + (f" ranks={ranks}" if ranks > 1 else "")


def build_plan(args: argparse.Namespace, method_overrides: dict[str, dict[str, Any]] | None = None) -> Plan:
    """Load the config, check every option, and list the (method, bits) jobs; no work yet.

    ``method_overrides`` replace method options after the config (the budget-curve tool
    sets ``iters`` this way), so they are part of each job's config hash.
    """
    if not args.config:
        task_class(args.task)  # unknown task -> one line listing the valid ones
    seeds = parse_seeds(args.seeds)
    path = config_path(args.task, args.model, args.config, REPO_ROOT / "configs")
    model_name = path.stem
    # the config may register tasks/methods of its own through mmengine's custom_imports
    cfg = load_config(path, parse_cfg_options(args.cfg_options))
    task_class(args.task)
    if cfg.get("task", {}).get("type", args.task) != args.task:
        raise UserError(f"config '{path}' is for task '{cfg.task.type}', not '{args.task}'")
    check_methods_section(cfg)
    methods = method_list(args.methods, cfg)
    bit_pairs = parse_bit_pairs(args)
    quant_cfg = dict(cfg.get("quant", {}))
    if args.quant_preset:
        quant_cfg["preset"] = args.quant_preset
    base_qconfig = QConfig.from_dict(quant_cfg)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint '{args.checkpoint}' does not exist; check the path given to --checkpoint")
    out = Path(args.out) if args.out else REPO_ROOT / "results" / f"{args.task}.csv"
    check_writable(out)
    device = resolve_device(args.device)
    distributed.init_from_env(device)  # under torchrun: join the process group (before any method is built)
    method_cfgs = {name: {**dict(cfg.get("methods", {}).get(name, {})), **(method_overrides or {}).get(name, {})}
                   for name in methods}
    for name in methods:  # unknown or impossible method options fail before any training
        build_method(name, **method_cfgs[name])

    cache_dir = default_cache_dir()
    adapter = build_task(args.task, cfg=cfg, model_name=model_name, data_root=args.data_root,
                         cache_dir=cache_dir, device=device)
    adapter.progress = not args.no_progress and distributed.is_main()
    adapter.fingerprint_kind = args.fingerprint
    adapter.check()
    teacher_id = teacher_identity(adapter, args, cache_dir)
    work_root = Path(args.work_dir) if args.work_dir else REPO_ROOT / "work_dirs"
    check_output_folder(work_root, "--work-dir", "run folders (checkpoints, losses)")
    if getattr(args, "export", None):
        check_output_folder(Path(args.export), "--export", "quantized models")
    if adapter.writes_cache:
        check_output_folder(cache_dir, "$ZAQBENCH_CACHE", f"the data and logs the '{args.task}' task writes there")
    elif not args.checkpoint:
        warn_if_teacher_cannot_be_cached(teacher_cache_path(adapter, cache_dir, args.task))
    pairs = [(name, FP_BITS, FP_BITS) for name in methods if name == "fp"]
    pairs += [(name, w, a) for (w, a) in bit_pairs for name in methods if name != "fp"]
    jobs = []
    for name, wbits, abits in pairs:
        method = build_method(name, **method_cfgs[name]).for_bits(wbits, abits)  # bit-width rules resolved
        qconfig = method.qconfig_for(base_qconfig.with_bits(wbits, abits))
        chash = short_hash({"model": model_name, "task": adapter.task_for_hash(hashed_task(cfg.get("task"))),
                            "quant": qconfig.to_dict(),
                            "method": name, "method_cfg": method.cfg, "teacher": teacher_id,
                            **({"data": adapter.data_identity()} if adapter.data_identity() else {})})
        jobs.append(Job(name, wbits, abits, qconfig, method, chash))
    check_layers(adapter, [job.qconfig for job in jobs if not job.qconfig.is_full_precision])
    if any(job.method.uses_real_data for job in jobs):
        adapter.check_real_data()
    delivery = plan_delivery(args, jobs, adapter)
    return Plan(args.task, model_name, cfg, adapter, jobs, seeds, quant_cfg.get("preset", "default"), out, device,
                cache_dir, work_root, delivery=delivery)


def check_layers(adapter: Any, qconfigs: list[QConfig]) -> None:
    """Refuse, before any training, a model with a convolution/linear layer that cannot be quantized
    or a setting that quantizes no layer (:func:`zaqbench.quant.check_quantizable`), on the task's
    architecture (untrained: only its layers matter)."""
    if not qconfigs:
        return
    with torch.random.fork_rng(devices=[]):  # building the architecture must not move the seeded streams
        model = adapter.build_model()
    for qconfig in dict.fromkeys(qconfigs):
        check_quantizable(model, qconfig)


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists: where a mkdir of ``path`` would start."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(folder: Path, option: str, what: str) -> None:
    """``folder`` exists as a writable directory or can be created: checked before any work."""
    existing = nearest_existing(folder)
    if existing.exists() and not existing.is_dir():
        raise UserError(f"{option} '{folder}' cannot hold {what}: '{existing}' is not a directory; "
                        f"give a folder path with {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} '{folder}' is not writable ('{existing}' denies it); "
                        f"choose another folder with {option}")


def warn_if_teacher_cannot_be_cached(path: Path) -> None:
    """A teacher that is trained but cannot be cached still serves this run (said up front
    and again when saving fails); the next run trains it again."""
    if teacher_ready(path):
        return
    existing = nearest_existing(path.parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        print(f"warning: the teacher cache '{path.parent}' is not writable: the teacher will be trained "
              "for this run but not cached (set ZAQBENCH_CACHE to a writable folder to keep it)",
              file=sys.stderr)


def prepare_teacher(plan: Plan, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    """P (trained once and cached, or the user's checkpoint) and its metrics.

    The teacher is shared by every seed through the cache, so it is built and trained from
    a fixed seed: which of ``--seeds`` happens to train it first must not change it."""
    torch.manual_seed(TEACHER_SEED)
    say(f"[zaqbench] {plan.task}/{plan.model_name}: preparing the full-precision model")
    if distributed.is_distributed() and not args.checkpoint \
            and not teacher_ready(teacher_cache_path(plan.adapter, plan.cache_dir, plan.task)):
        # teacher training is one process's job (det/seg train through mmengine's Runner, whose
        # samplers and evaluators would see the process group); train it once, then rerun
        raise UserError(f"no cached teacher for {plan.task}/{plan.model_name} yet; train it once in one process "
                        f"(tools/run_task.py --task {plan.task} --model {plan.model_name} --methods fp), "
                        "then rerun under torchrun")
    teacher, teacher_source = get_teacher(plan.adapter, plan.task, plan.cache_dir, args.checkpoint,
                                          args.trust_checkpoint)
    step_line(f"{plan.task}/{plan.model_name}: evaluating the full-precision model", args.no_progress)
    start = time.perf_counter()
    fp_metrics = plan.adapter.evaluate(teacher)
    plan.fp_seconds = time.perf_counter() - start
    say(f"[zaqbench] FP {plan.adapter.metric} = {fp_metrics[plan.adapter.metric]:.4f} "
        f"(teacher: {teacher_source}; device: {plan.device_label()})")
    warning = plan.adapter.fp_warning(fp_metrics)
    if warning and distributed.is_main():
        print(f"warning: {warning}", file=sys.stderr)
    return teacher, fp_metrics


def say(message: str) -> None:
    """A progress line on stderr, from rank 0 only under torchrun."""
    if distributed.is_main():
        print(message, file=sys.stderr)


def result_row(plan: Plan, job: "Job", seed: int, metrics: dict[str, float], fp_value: float,
               calib_data: str, quantized: bool, commit: str,
               layers: tuple[list[str], list[str]] | None = None, shared_seconds: float = 0.0,
               deployed: tuple[float, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The columns every result row shares: identity, metric, protocol, provenance.

    ``layers``: (quantized, full-precision) layer names of the evaluated model, recorded in
    ``extra_metrics`` as ``layers.*`` (see :func:`zaqbench.run.results.format_layer_coverage`).
    ``shared_seconds``: the time of set-up the run shares across bit widths
    (``MethodOutput.shared_seconds``), recorded as ``shared_seconds=`` when there was any.
    ``deployed``: the metric of the deployed graph and how it was run (``deployed_value``, ``deploy.*``)."""
    metric = plan.adapter.metric
    extra = (format_extra_metrics({k: v for k, v in metrics.items() if k != metric}),
             format_deployment(*deployed) if deployed else "",
             f"{SHARED_SECONDS}={shared_seconds:.2f}" if shared_seconds else "",
             format_layer_coverage(*layers) if layers else "",
             format_settings({**job.method.settings(),  # measured metrics, then the settings
                                     **{f"quant.{k}": v for k, v in job.qconfig.extra_settings().items()}}))
    protocol = job.qconfig.protocol(calib_data) if quantized else \
        {**job.qconfig.protocol("none"), "w_granularity": "fp", "first_last_fp": "all"}
    return {
        "task": plan.task, "model": plan.adapter.model_label,
        "dataset": describe_dataset(plan.adapter.dataset_name, plan.adapter.data_identity()),
        "method": job.method_name, "wbits": job.wbits, "abits": job.abits, "metric": metric,
        "value": round(metrics[metric], 4), "fp_value": round(fp_value, 4),
        "extra_metrics": ";".join(filter(None, extra)),
        "seed": seed, **protocol, "quant_preset": plan.quant_preset, "config_hash": job.config_hash,
        "device": plan.device_label(), "commit": commit, "date": now_iso(),
    }


def not_applicable_cell(reason: str) -> str:
    """The ``calib_data`` cell of an n/a row: ``n/a: <reason>`` on one line, without commas."""
    return NOT_APPLICABLE + " ".join(reason.split()).replace(",", ";")


def run(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when a row was written but its export failed (reported on stderr)."""
    failed: list[str] = []
    run_rows(args, failed=failed)
    return 1 if failed else 0


def run_rows(args: argparse.Namespace, plan: Plan | None = None, failed: list[str] | None = None) -> list[dict[str, Any]]:
    """Plan (unless ``plan`` is ``build_plan(args)`` already), then run every (seed, job) that is to
    run; returns the rows appended (none for a dry run). ``failed`` collects what went wrong after a
    row was written (an export), if given."""
    plan = plan or build_plan(args)
    runs = [(seed, job) for seed in plan.seeds for job in plan.jobs]
    done = existing_runs(plan.out) if args.dry_run or args.skip_existing else {}
    if args.dry_run:
        print_plan(runs, done)
        return []
    if args.skip_existing:
        runs = [(seed, job) for seed, job in runs if job.key(seed) not in done]
        if not runs:
            print(f"[zaqbench] every requested run already has a row in {plan.out}", file=sys.stderr)
            return []

    # rank 0 holds the run folders for all ranks of a torchrun launch
    folders = sorted({plan.run_dir(job, seed) for seed, job in runs}) if distributed.is_main() else []
    with hold_run_folders(folders):
        printed = run_jobs(plan, runs, args, failed if failed is not None else [])
    if distributed.is_main():
        print_table(printed)
    say(f"[zaqbench] {len(printed)} row(s) appended to {plan.out}")
    return printed


def run_jobs(plan: Plan, runs: list[tuple[int, "Job"]], args: argparse.Namespace,
             failed: list[str]) -> list[dict[str, Any]]:
    """The teacher, then each (seed, job)'s method, evaluation and row; returns the rows written. What
    fails after a row is computed (its export) is reported, appended to ``failed``, and costs no row."""
    teacher, fp_metrics = prepare_teacher(plan, args)
    fp_value = fp_metrics[plan.adapter.metric]
    commit = git_commit(config=Path(plan.cfg.filename))
    printed: list[dict[str, Any]] = []
    calib_cache: dict = {}  # calibration batches made once, reused across bit widths (RunContext)
    for seed, job in runs:
        name, wbits, abits = job.method_name, job.wbits, job.abits
        ctx = RunContext(plan.adapter, teacher, job.qconfig, seed, plan.run_dir(job, seed),
                         args.resume, not args.no_progress and distributed.is_main(),
                         progress_lines=args.no_progress, calib_cache=calib_cache)
        say(f"[zaqbench] {name} W{wbits}A{abits} seed {seed} ...")
        torch.manual_seed(seed)
        start = time.perf_counter()
        result: MethodOutput = job.method.run(ctx)
        if result.not_applicable:  # an explicit n/a cell: no score, the reason in calib_data
            metrics, calib = {plan.adapter.metric: float("nan")}, not_applicable_cell(result.not_applicable)
        elif result.model is teacher:  # the FP row: the evaluation prepare_teacher timed
            metrics, calib = fp_metrics, result.calib_data
            start -= plan.fp_seconds
        else:
            step_line(f"{name} W{wbits}A{abits}: evaluating", args.no_progress)
            metrics, calib = plan.adapter.evaluate(result.model), result.calib_data
        # the row's own time: the set-up shared across bit widths is in shared_seconds instead
        seconds = time.perf_counter() - start - (result.shared_seconds if result.shared_made else 0.0)
        layers = layer_coverage(result.model) if result.quantized and not result.not_applicable else None
        delivered = None
        if distributed.is_main() and layers and plan.delivery is not None and plan.delivery.active:
            delivered = deliver(plan, job, seed, result.model, metrics[plan.adapter.metric], fp_value,
                                ctx.work_dir, say)
        row = {**result_row(plan, job, seed, metrics, fp_value, calib, result.quantized, commit, layers,
                            result.shared_seconds, delivered.deployed if delivered else None),
               "iters": result.iters, "seconds": round(seconds, 1)}
        if distributed.is_main():  # one row per run, whatever the number of ranks
            append_or_keep(plan.out, row, ctx.work_dir)
        if delivered is not None and delivered.problem:  # the row is safe; say what failed and what to do
            print(f"error: {delivered.problem}", file=sys.stderr)
            failed.append(delivered.problem)
        printed.append(row)
        score = f"n/a ({result.not_applicable})" if result.not_applicable else f"{row['value']:.4f}"
        say(f"[zaqbench] {name} W{wbits}A{abits} seed {seed}: {plan.adapter.metric} = {score} ({seconds:.0f}s)")
    return printed


def append_or_keep(out: Path, row: dict[str, Any], run_dir: Path) -> None:
    """Append ``row`` to ``out``; if that fails after the result was computed, keep the row in
    the run folder (or print it) so it is never lost, then stop with one line saying where."""
    try:
        append_rows(out, [row])
        return
    except (OSError, UserError) as err:
        reason = getattr(err, "strerror", None) or str(err)
    kept = run_dir / "unsaved_row.csv"
    try:
        append_rows(kept, [row])
        where = f"the row is kept in {kept}"
    except (OSError, UserError):
        print(",".join(str(row[c]) for c in COLUMNS), file=sys.stderr)
        where = "the row is printed above (CSV, in the results column order)"
    raise UserError(f"could not append the result row to {out} ({reason}); {where}; "
                    "fix the file and append the row to it")


@dataclass
class Job:
    method_name: str
    wbits: int
    abits: int
    qconfig: QConfig
    method: Any
    config_hash: str

    def key(self, seed: int) -> tuple[str, str, int, int, int]:
        """What makes a result row unique: config hash, method, bits and seed."""
        return (self.config_hash, self.method_name, self.wbits, self.abits, seed)


def teacher_identity(adapter, args: argparse.Namespace, cache_dir: Path) -> str:
    """A stable name for the teacher: its cache file name, or the checkpoint's content hash."""
    if args.checkpoint:
        digest = hashlib.sha256()
        with open(args.checkpoint, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return f"checkpoint:{digest.hexdigest()[:16]}"
    return "teacher:" + teacher_cache_path(adapter, cache_dir, args.task).name


def existing_runs(path: Path) -> dict[tuple, float]:
    """Keys of the rows already in ``path`` -> their run time in seconds; bad lines are
    reported as ``file:line`` and skipped (the table tool says the same)."""
    if not Path(path).exists():
        return {}
    done: dict[tuple, float] = {}
    for row in keyed_rows(path):
        try:
            done[row_key(row)] = float(row["seconds"])
        except (KeyError, TypeError, ValueError):
            continue  # a foreign line: the table tool reports it
    return done


def keyed_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV; bad lines are reported as ``file:line`` and skipped."""
    _, rows = read_csv_rows(resolve_output(path), lambda msg: print(f"warning: {msg}", file=sys.stderr))
    return [row for _, row in rows]


def row_key(row: dict[str, str]) -> tuple[str, str, int, int, int]:
    """A CSV row's ``Job.key``: config hash, method, bits and seed (KeyError/ValueError if foreign)."""
    return (row["config_hash"], row["method"], int(row["wbits"]), int(row["abits"]), int(row["seed"]))


def print_plan(runs: list[tuple[int, Job]], done: dict[tuple, float]) -> None:
    total = 0.0
    for seed, job in runs:
        last = done.get(job.key(seed))
        total += last or 0.0
        status = f"done, took {last:.0f}s last time" if last is not None else "to run"
        print(f"  {job.method_name:12s} W{job.wbits}A{job.abits} seed {seed}  [{job.config_hash}]  {status}")
    print(f"  ({sum(job.key(seed) in done for seed, job in runs)}/{len(runs)} done; "
          f"the done ones took {total / 60:.1f} min last time)")


def print_table(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    if not rows:
        return
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["bits"] = "W" + df["wbits"].astype(str) + "A" + df["abits"].astype(str)
    df["% of FP"] = (100 * df["value"] / df["fp_value"]).round(1)
    view = df[["model", "method", "bits", "metric", "value", "% of FP", "calib_data", "seconds"]]
    print(view.to_string(index=False))
