"""What the runner hands over besides a row: the quantized model as files (``--export``) and its
score on the deployed ONNX graph (``--deploy-eval``).

Every refusal comes when the plan is built (:func:`plan_delivery`): an export folder that cannot be
written, an opset the exporter or onnxruntime cannot use, a protocol or bit width without a QDQ
form the runtime runs, a model the adapter cannot score deployed. A failure after a result was
computed (:func:`deliver`) never costs its row: the row is written without the deployed value, and
the failure is reported with what to do.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..errors import UserError

#: file names in a run folder when --deploy-eval is given without --export
RUN_FOLDER_FILES = ("model.pth", "model.onnx")


@dataclass
class Delivery:
    """What the plan delivers for each quantized job."""

    export: Path | None  # --export DIR, or None (files go to the run folder under --deploy-eval)
    opset: int | None  # the ONNX opset; None: no ONNX graph at all
    deploy_eval: bool
    skipped: dict[str, str] = field(default_factory=dict)  # config hash -> why no ONNX graph is written

    @property
    def active(self) -> bool:
        return self.export is not None or self.deploy_eval


def plan_delivery(args: argparse.Namespace, jobs: list[Any], adapter: Any) -> Delivery:
    """Check ``--export``, ``--deploy-eval`` and ``--onnx-opset`` against every quantized job (the
    runner's ``Job``s),
    before any work; returns what each job delivers."""
    from ..deploy import DEFAULT_OPSET, check_exportable, check_opset

    opset_given = getattr(args, "onnx_opset", None)
    deploy_eval = bool(getattr(args, "deploy_eval", False))
    export = Path(args.export) if getattr(args, "export", None) else None
    if export is None and not deploy_eval:
        if opset_given is not None:
            raise UserError("--onnx-opset sets the opset of the exported ONNX graph; give it with --export DIR "
                            "or --deploy-eval")
        return Delivery(None, None, False)
    if deploy_eval and distributed.world_size() > 1:
        raise UserError("--deploy-eval scores the graph in one process; run it without torchrun "
                        "(or leave out --deploy-eval)")
    opset = DEFAULT_OPSET if opset_given is None else opset_given
    check_opset(opset)
    delivery = Delivery(export, opset, deploy_eval)
    for job in jobs:
        if job.qconfig.is_full_precision:
            continue
        try:
            check_exportable(job.qconfig, opset)
        except UserError as err:
            if deploy_eval or job.qconfig.rounding == "before-zero-point":
                raise UserError(f"{job.method_name} W{job.wbits}A{job.abits}: {err}") from None
            delivery.skipped[job.config_hash] = str(err)  # --export alone: the weights-only file still serves
    for reason in dict.fromkeys(delivery.skipped.values()):
        print(f"warning: --export writes the weights-only file but no ONNX graph for the jobs of this protocol: "
              f"{reason}", file=sys.stderr)
    if deploy_eval:
        with torch.random.fork_rng(devices=[]):  # the architecture only: it must not move the seeded streams
            adapter.deployed_model(adapter.build_model(), lambda x: None)  # a model it cannot score deployed: refused
    return delivery


@dataclass
class Delivered:
    """A job's files and deployed score; ``problem``: what failed and what to do, or None."""

    files: list[Path] = field(default_factory=list)
    deployed: tuple[float, dict[str, Any]] | None = None
    problem: str | None = None


def deliver(plan: Any, job: Any, seed: int, model: Any, value: float, fp_value: float,
            run_dir: Path, say) -> Delivered:
    """Write ``model``'s files (``plan``, ``job``: the runner's) and score its graph with onnxruntime;
    nothing raised (but Ctrl-C):
    a failure comes back as ``problem``, so the caller still writes the row."""
    from ..deploy import export_onnx
    from ..deploy.runtime import OrtGraph, cpu_label, runtime_label
    from ..export import save_quantized

    delivery: Delivery = plan.delivery
    out = Delivered()
    what = f"{job.method_name} W{job.wbits}A{job.abits}"
    if delivery.export is not None:
        stem = f"{plan.task}_{plan.model_name}_{job.method_name}_w{job.wbits}a{job.abits}_seed{seed}_{job.config_hash}"
        pth, onnx_path = delivery.export / f"{stem}.pth", delivery.export / f"{stem}.onnx"
    else:
        pth, onnx_path = (run_dir / name for name in RUN_FOLDER_FILES)
    spec = plan.adapter.input_spec
    info = dict(task=plan.task, model=plan.model_name, method=job.method_name, wbits=job.wbits, abits=job.abits,
                seed=seed, config_hash=job.config_hash, metric=plan.adapter.metric, value=round(value, 4),
                fp_value=round(fp_value, 4))
    try:
        out.files.append(save_quantized(model, job.qconfig, pth, (spec.channels, spec.height, spec.width), **info))
        say(f"[zaqbench] quantized model written to {pth}")
        if delivery.opset is None or job.config_hash in delivery.skipped:
            return out
        example = torch.randn(2, *spec.shape(1)[1:], generator=torch.Generator().manual_seed(seed)).to(plan.device)
        exported = export_onnx(model, job.qconfig, onnx_path, example, raw=plan.adapter.forward_raw,
                               opset=delivery.opset,
                               metadata={**info, "input_mean": list(spec.mean), "input_std": list(spec.std)})
        out.files.append(exported.path)
        say(f"[zaqbench] ONNX graph ({exported.representation}, opset {exported.opset}) written to {exported.path}")
        if delivery.deploy_eval:
            graph = OrtGraph(exported.path)
            with torch.no_grad():
                metrics = plan.adapter.evaluate(plan.adapter.deployed_model(model, graph.raw))
            out.deployed = (metrics[plan.adapter.metric],
                            {"runtime": runtime_label(), "threads": graph.threads, "graph": exported.representation,
                             "opset": exported.opset, "cpu": cpu_label()})
            say(f"[zaqbench] {what}: deployed {plan.adapter.metric} = {out.deployed[0]:.4f} ({runtime_label()}, CPU)")
    except Exception as err:  # noqa: BLE001 - whatever the exporter or runtime raises, the row must be written
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        if out.files:
            fix = (f"the quantized model is kept in {out.files[0]}; rebuild it with zaqbench.load_quantized and "
                   "export it with zaqbench.deploy.export_onnx (docs/export.md)")
        else:
            fix = "free disk space or choose another folder with --export, then rerun this method and bit width"
        out.problem = f"{what}: export failed ({type(err).__name__}: {reason}); its row is written without a " \
                      f"deployed value; {fix}"
    return out
