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
from typing import Any, Callable, NoReturn, Sequence

import torch

from . import distributed
from .adapter import without_threads
from .data_identity import FINGERPRINTS
from .data_identity import describe as describe_dataset
from .devices import describe, resolve_device
from .errors import UserError
from .export import save_quantized
from .methods import MethodOutput, RunContext
from .quant import QConfig, check_quantizable, layer_coverage
from .run.lists import parse_list
from .run_lock import hold_run_folders
from .registry import METHODS, build_method, build_task, method_class, task_class
from .results import (COLUMNS, NOT_APPLICABLE, append_rows, check_writable, format_extra_metrics,
                      format_layer_coverage, format_settings,
                      git_commit, now_iso, read_csv_rows, resolve_output)
from .teacher import get_teacher, teacher_cache_path

REPO_ROOT = Path(__file__).resolve().parents[1]
FP_BITS = 32
TEACHER_SEED = 0


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZAQBENCH_CACHE", Path.home() / ".cache" / "zaqbench"))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is the suite's one ``error:`` line (exit 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Run zaqbench methods on one task/model and append result rows.")
    p.add_argument("--task", required=True, help="task adapter name (e.g. cls, det, seg)")
    p.add_argument("--model", default=None, help="config name under configs/<task>/ (default: the task's default)")
    p.add_argument("--config", default=None, help="explicit config file (overrides --model lookup)")
    p.add_argument("--method", default=None, help="comma-separated methods (default: all the config lists)")
    p.add_argument("--bits", default=None, help="comma-separated WbAb widths, e.g. 8,6,4 (W8A8, W6A6, W4A4)")
    p.add_argument("--wbits", type=int, default=None, help="weight bits (2-8, 16/32 = full precision)")
    p.add_argument("--abits", type=int, default=None, help="activation bits (2-8, 16/32 = full precision)")
    p.add_argument("--quant-preset", default=None, help="quantization preset: default or zaq-code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="auto (first CUDA device if any, else cpu), cpu, cuda or cuda:N; under torchrun "
                        "auto/cuda mean cuda:LOCAL_RANK")
    p.add_argument("--checkpoint", default=None, help="full-precision weights to use instead of the cached teacher")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow arbitrary unpickling of --checkpoint (only for files you trust)")
    p.add_argument("--data-root", default=None, help="real data location (default: the embedded data)")
    p.add_argument("--out", default=None, help="results CSV (default: results/<task>.csv)")
    p.add_argument("--work-dir", default=None, help="run folders for checkpoints and loss curves")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="also write each quantized model to DIR as a weights-only file "
                        "(zaqbench.export.load_quantized rebuilds it on the FP architecture)")
    p.add_argument("--resume", action="store_true", help="continue interrupted ZAQ runs from their checkpoints")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--fingerprint", choices=FINGERPRINTS, default="sampled",
                   help="how --data-root's content is identified: 'sampled' (file sizes plus the bytes of 64 "
                        "files; fast) or 'full' (every byte; per-file hashes cached by size and mtime)")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip runs whose row (same config hash, method, bits, seed) is already in --out")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether --out already has them")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. methods.zaq.iters=10 task.eval.max_samples=500")
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


def parse_int_items(text: str, option: str) -> list[int]:
    """``8,6,4`` -> [8, 6, 4]; an empty item, a non-integer or a repeat is an error."""
    return parse_list(text, option, int, "8,6,4")


def parse_bits(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.bits is not None:
        if args.wbits is not None or args.abits is not None:
            raise UserError("--bits sets weight and activation bits together; use either --bits or "
                             "--wbits/--abits, not both")
        pairs = [(b, b) for b in parse_int_items(args.bits, "--bits")]
    else:
        pairs = [(args.wbits or 4, args.abits or 4)]
    for w, a in pairs:
        QConfig(wbits=w, abits=a)  # validates: 2-8 or 16/32
    return pairs


MAX_SEED = 2**31 - 1  # numpy and every seed derived from it (seed + offsets) stay in range


def check_seed(seed: int) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed} is out of range; use an integer from 0 to {MAX_SEED}")
    return seed


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
        names = parse_list(arg, "--method", str, "ptq,zaq")
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
    quant_preset: str
    out: Path
    device: torch.device
    cache_dir: Path
    work_root: Path

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
    check_seed(args.seed)
    path = config_path(args.task, args.model, args.config, REPO_ROOT / "configs")
    model_name = path.stem
    # the config may register tasks/methods of its own through mmengine's custom_imports
    cfg = load_config(path, parse_cfg_options(args.cfg_options))
    task_class(args.task)
    if cfg.get("task", {}).get("type", args.task) != args.task:
        raise UserError(f"config '{path}' is for task '{cfg.task.type}', not '{args.task}'")
    check_methods_section(cfg)
    methods = method_list(args.method, cfg)
    bit_pairs = parse_bits(args)
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
    if args.export:
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
        chash = short_hash({"model": model_name, "task": hashed_task(cfg.get("task")), "quant": qconfig.to_dict(),
                            "method": name, "method_cfg": method.cfg, "teacher": teacher_id,
                            **({"data": adapter.data_identity()} if adapter.data_identity() else {})})
        jobs.append(Job(name, wbits, abits, qconfig, method, chash))
    check_layers(adapter, [job.qconfig for job in jobs if not job.qconfig.is_full_precision])
    if any(job.method.uses_real_data for job in jobs):
        adapter.check_real_data()
    return Plan(args.task, model_name, cfg, adapter, jobs, quant_cfg.get("preset", "default"), out, device,
                cache_dir, work_root)


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


def hashed_task(task: Any) -> Any:
    """The task section as it enters a row's config hash: less ``teacher.threads``, which only
    pins how the teacher is trained so that it comes out the same (``TaskAdapter.teacher_threads``)."""
    if not isinstance(task, dict) or not isinstance(task.get("teacher"), dict):
        return task
    return {**task, "teacher": without_threads(task["teacher"])}


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
    if path.exists():
        return
    existing = nearest_existing(path.parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        print(f"warning: the teacher cache '{path.parent}' is not writable: the teacher will be trained "
              "for this run but not cached (set ZAQBENCH_CACHE to a writable folder to keep it)",
              file=sys.stderr)


def prepare_teacher(plan: Plan, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    """P (trained once and cached, or the user's checkpoint) and its metrics.

    The teacher is shared by every seed through the cache, so it is built and trained from
    a fixed seed: which ``--seed`` happens to train it first must not change it."""
    torch.manual_seed(TEACHER_SEED)
    say(f"[zaqbench] {plan.task}/{plan.model_name}: preparing the full-precision model")
    if distributed.is_distributed() and not args.checkpoint \
            and not teacher_cache_path(plan.adapter, plan.cache_dir, plan.task).exists():
        # teacher training is one process's job (det/seg train through mmengine's Runner, whose
        # samplers and evaluators would see the process group); train it once, then rerun
        raise UserError(f"no cached teacher for {plan.task}/{plan.model_name} yet; train it once in one process "
                        f"(tools/run_task.py --task {plan.task} --model {plan.model_name} --method fp), "
                        "then rerun under torchrun")
    teacher, teacher_source = get_teacher(plan.adapter, plan.task, plan.cache_dir, args.checkpoint,
                                          args.trust_checkpoint)
    fp_metrics = plan.adapter.evaluate(teacher)
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
               layers: tuple[list[str], list[str]] | None = None) -> dict[str, Any]:
    """The columns every result row shares: identity, metric, protocol, provenance.

    ``layers``: (quantized, full-precision) layer names of the evaluated model, recorded in
    ``extra_metrics`` as ``layers.*`` (see :func:`zaqbench.results.format_layer_coverage`)."""
    metric = plan.adapter.metric
    extra = (format_extra_metrics({k: v for k, v in metrics.items() if k != metric}),
             format_layer_coverage(*layers) if layers else "",
             format_settings({**job.method.settings(),  # measured metrics, then the settings
                                     **{f"quant.{k}": v for k, v in job.qconfig.later_options().items()}}))
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
    run_rows(args)
    return 0


def run_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Plan, then run every job that is to run; returns the rows appended (none for a dry run)."""
    plan = build_plan(args)
    jobs = plan.jobs
    done = existing_runs(plan.out) if args.dry_run or args.skip_existing else {}
    if args.dry_run:
        print_plan(jobs, done, args.seed)
        return []
    if args.skip_existing:
        jobs = [j for j in jobs if j.key(args.seed) not in done]
        if not jobs:
            print(f"[zaqbench] every requested run already has a row in {plan.out}", file=sys.stderr)
            return []

    # rank 0 holds the run folders for all ranks of a torchrun launch
    folders = sorted({plan.run_dir(job, args.seed) for job in jobs}) if distributed.is_main() else []
    with hold_run_folders(folders):
        printed = run_jobs(plan, jobs, args)
    if distributed.is_main():
        print_table(printed)
    say(f"[zaqbench] {len(printed)} row(s) appended to {plan.out}")
    return printed


def run_jobs(plan: Plan, jobs: list["Job"], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The teacher, then each job's method, evaluation and row; returns the rows written."""
    teacher, fp_metrics = prepare_teacher(plan, args)
    fp_value = fp_metrics[plan.adapter.metric]
    commit = git_commit(config=Path(plan.cfg.filename))
    printed: list[dict[str, Any]] = []
    calib_cache: dict = {}  # calibration batches made once, reused across bit widths (RunContext)
    for job in jobs:
        name, wbits, abits = job.method_name, job.wbits, job.abits
        ctx = RunContext(plan.adapter, teacher, job.qconfig, args.seed, plan.run_dir(job, args.seed),
                         args.resume, not args.no_progress and distributed.is_main(), calib_cache=calib_cache)
        say(f"[zaqbench] {name} W{wbits}A{abits} ...")
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        result: MethodOutput = job.method.run(ctx)
        if result.not_applicable:  # an explicit n/a cell: no score, the reason in calib_data
            metrics, calib = {plan.adapter.metric: float("nan")}, not_applicable_cell(result.not_applicable)
        else:
            metrics = fp_metrics if result.model is teacher else plan.adapter.evaluate(result.model)
            calib = result.calib_data
        seconds = time.perf_counter() - start
        layers = layer_coverage(result.model) if result.quantized and not result.not_applicable else None
        row = {**result_row(plan, job, args.seed, metrics, fp_value, calib, result.quantized, commit, layers),
               "iters": result.iters, "seconds": round(seconds, 1)}
        if distributed.is_main():  # one row per run, whatever the number of ranks
            append_or_keep(plan.out, row, ctx.work_dir)
            if args.export and layers:
                export_model(plan, job, args.seed, result.model, row, Path(args.export))
        printed.append(row)
        score = f"n/a ({result.not_applicable})" if result.not_applicable else f"{row['value']:.4f}"
        say(f"[zaqbench] {name} W{wbits}A{abits}: {plan.adapter.metric} = {score} ({seconds:.0f}s)")
    return printed


def export_model(plan: Plan, job: "Job", seed: int, model: Any, row: dict[str, Any], folder: Path) -> Path:
    """``<folder>/<task>_<model>_<method>_w<W>a<A>_seed<S>_<config hash>.pth`` (``zaqbench.export``)."""
    spec = plan.adapter.input_spec
    name = f"{plan.task}_{plan.model_name}_{job.method_name}_w{job.wbits}a{job.abits}_seed{seed}_{job.config_hash}.pth"
    path = save_quantized(model, job.qconfig, folder / name, (spec.channels, spec.height, spec.width),
                          task=plan.task, model=plan.model_name, method=job.method_name, wbits=job.wbits,
                          abits=job.abits, seed=seed, config_hash=job.config_hash, metric=row["metric"],
                          value=row["value"], fp_value=row["fp_value"])
    say(f"[zaqbench] quantized model written to {path}")
    return path


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


def print_plan(plan: list[Job], done: dict[tuple, float], seed: int) -> None:
    total = 0.0
    for job in plan:
        last = done.get(job.key(seed))
        total += last or 0.0
        status = f"done, took {last:.0f}s last time" if last is not None else "to run"
        print(f"  {job.method_name:12s} W{job.wbits}A{job.abits} seed {seed}  [{job.config_hash}]  {status}")
    print(f"  ({sum(job.key(seed) in done for job in plan)}/{len(plan)} done; "
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
