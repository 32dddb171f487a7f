"""The one adversarial loop of ZAQ, written against the adapter interface only.

Per iteration: ``q_steps`` updates of Q minimising D_o + alpha * D_f on a
detached generated batch, then one update of G minimising
-D_o - alpha * D_f - beta * L_a. The returned Q is the last iterate: no
checkpoint is ever chosen by test accuracy.

Nothing here is global: every random draw comes from a ``torch.Generator`` the
trainer owns (plus the global RNG state, which is saved too for layers that
use it), and the device is the adapter's, so the loop can later run under
``torchrun`` unchanged.
"""
from __future__ import annotations

import json
import math
import signal
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .adapter import TaskAdapter
from .checkpoint import atomic_save, load_file
from .discrepancy import activation_regularizer, feature_discrepancy, output_discrepancy
from .errors import UserError
from .features import forward_with_features
from .generator import Generator
from .quant import calibrate_activations, load_quantizer_state, quantizer_state


@dataclass
class ZAQConfig:
    """Every knob of the loop, with the official code's defaults."""

    iters: int = 18000  # official: 300 epochs x 60 iterations
    q_steps: int = 5
    batch_size: int = 256
    nz: int = 256
    alpha: float = 1.0  # weight of D_f
    beta: float = 0.1  # weight of L_a
    feature_weights: str = "uniform"  # 'uniform' (official) | 'adaptive'
    relation_pool_size: int = 32  # feature maps above this^2 positions are pooled
    q_lr: float = 0.1
    q_momentum: float = 0.9
    q_weight_decay: float = 5e-4
    g_lr: float = 1e-3
    g_betas: tuple[float, float] = (0.9, 0.999)
    lr_milestones: tuple[float, ...] = (1 / 3, 2 / 3)  # fractions of iters
    lr_gamma: float = 0.1
    q_bn_update: bool = True  # Q's BN layers in train mode (official) or frozen
    calib_batches: int = 4  # generated batches that set Q's activation ranges
    recalibrate_at_end: bool = True  # re-set ranges on the trained G's images
    checkpoint_interval: int = 50
    generator_channels: int = 128

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "ZAQConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UserError(f"unknown ZAQ option(s) {unknown}; valid options: {sorted(known)}")
        cfg = dict(cfg)
        for key in ("g_betas", "lr_milestones"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        return cls(**cfg)


class DivergenceError(UserError):
    """A loss became NaN/inf; the last good checkpoint is kept, no result row is written."""


class Interrupted(UserError):
    """Ctrl-C: a checkpoint was saved; ``--resume`` continues."""


class _StopOnCtrlC:
    """First Ctrl-C asks the loop to stop after the current iteration (so the saved
    state is a whole iteration); a second one interrupts at once. The previous
    handler is restored on exit. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class ZAQTrainer:
    """Trains Q (and G) against the frozen teacher P for ``cfg.iters`` iterations."""

    def __init__(self, adapter: TaskAdapter, teacher: nn.Module, qmodel: nn.Module,
                 cfg: ZAQConfig, work_dir: Path, seed: int, progress: bool = True) -> None:
        self.adapter = adapter
        self.device = adapter.device
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.progress = progress
        self.feature_names = list(adapter.feature_names)
        self.teacher = teacher.eval().requires_grad_(False)
        self.qmodel = qmodel.requires_grad_(True)  # Q is a copy of P, which may have been frozen
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        torch.manual_seed(seed)
        self.generator = Generator(adapter.input_spec, cfg.nz, cfg.generator_channels).to(self.device)
        self.opt_q = torch.optim.SGD(qmodel.parameters(), lr=cfg.q_lr, momentum=cfg.q_momentum,
                                     weight_decay=cfg.q_weight_decay)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.g_lr, betas=cfg.g_betas)
        milestones = sorted({max(1, round(f * cfg.iters)) for f in cfg.lr_milestones})
        self.sched_q = torch.optim.lr_scheduler.MultiStepLR(self.opt_q, milestones, cfg.lr_gamma)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, milestones, cfg.lr_gamma)
        self.iteration = 0

    # -- pieces ---------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.pth"

    @property
    def loss_log_path(self) -> Path:
        return self.work_dir / "losses.jsonl"

    def sample(self) -> torch.Tensor:
        z = torch.randn(self.cfg.batch_size, self.cfg.nz, generator=self.rng, device=self.device)
        return self.generator(z)

    def _discrepancy(self, x: torch.Tensor, p_grad: bool) -> dict[str, torch.Tensor]:
        forward = self.adapter.forward_raw
        with torch.set_grad_enabled(p_grad):
            p_out, p_feats = forward_with_features(self.teacher, self.feature_names, forward, x)
        q_out, q_feats = forward_with_features(self.qmodel, self.feature_names, forward, x)
        d_o = output_discrepancy(q_out, p_out)
        if self.cfg.alpha:
            d_f = feature_discrepancy(q_feats, p_feats, self.cfg.relation_pool_size, self.cfg.feature_weights)
        else:
            d_f = torch.zeros((), device=self.device)
        return {"d_o": d_o, "d_f": d_f, "l_a": activation_regularizer(p_feats)}

    def _set_q_mode(self) -> None:
        """Q trains, but Dropout stays off (P has none active, so it would only add noise
        to D_o), and BN statistics are frozen unless ``q_bn_update``."""
        self.qmodel.train()
        for m in self.qmodel.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd) or (
                    not self.cfg.q_bn_update and isinstance(m, nn.modules.batchnorm._BatchNorm)):
                m.eval()

    def _check_finite(self, losses: dict[str, float]) -> None:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            kept = f"last good checkpoint kept at {self.checkpoint_path}" if self.checkpoint_path.exists() \
                else "no checkpoint was written yet"
            raise DivergenceError(f"ZAQ diverged at iteration {self.iteration}: {', '.join(bad)} "
                                  f"is not finite; {kept}; lower q_lr/g_lr and rerun")

    def step(self) -> dict[str, float]:
        """One ZAQ iteration: q_steps Q updates, then one G update."""
        cfg = self.cfg
        self.generator.train()
        self._set_q_mode()
        for _ in range(cfg.q_steps):
            with torch.no_grad():
                x = self.sample()
            d = self._discrepancy(x, p_grad=False)
            loss_q = d["d_o"] + cfg.alpha * d["d_f"]
            self.opt_q.zero_grad(set_to_none=True)
            loss_q.backward()
            self.opt_q.step()
        x = self.sample()
        d = self._discrepancy(x, p_grad=True)
        loss_g = -d["d_o"] - cfg.alpha * d["d_f"] - cfg.beta * d["l_a"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(self.generator.parameters()))  # Q's gradients are not needed here
        self.opt_g.step()
        self.sched_q.step()
        self.sched_g.step()
        self.iteration += 1
        return {"loss_q": loss_q.item(), "loss_g": loss_g.item(), "d_o": d["d_o"].item(),
                "d_f": d["d_f"].item(), "l_a": d["l_a"].item()}

    def calibrate(self, batches: int) -> None:
        """Set Q's activation ranges on generated images (no real data). G stays in train
        mode, as in the loop, so the images are the ones Q is trained on."""
        self.generator.train()
        with torch.no_grad():
            samples = [self.sample() for _ in range(batches)]
        calibrate_activations(self.qmodel, samples, self.adapter.forward_raw)

    # -- checkpoints ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def sched_state(s):
            state = dict(s.state_dict())
            state["milestones"] = dict(state["milestones"])  # Counter is not weights-only safe
            return state

        return {
            "iteration": self.iteration,
            "generator": self.generator.state_dict(),
            "qmodel": self.qmodel.state_dict(),
            "quantizer": quantizer_state(self.qmodel),
            "opt_q": self.opt_q.state_dict(), "opt_g": self.opt_g.state_dict(),
            "sched_q": sched_state(self.sched_q), "sched_g": sched_state(self.sched_g),
            "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(),
            "config": json.dumps(asdict(self.cfg)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != json.dumps(asdict(self.cfg)):
            raise UserError(f"{self.checkpoint_path} was written with a different ZAQ config; "
                            "rerun without --resume or with the original settings")
        self.generator.load_state_dict(state["generator"])
        self.qmodel.load_state_dict(state["qmodel"])
        load_quantizer_state(self.qmodel, state["quantizer"])
        self.opt_q.load_state_dict(state["opt_q"])
        self.opt_g.load_state_dict(state["opt_g"])
        for sched, key in ((self.sched_q, "sched_q"), (self.sched_g, "sched_g")):
            sstate = dict(state[key])
            sstate["milestones"] = Counter(sstate["milestones"])
            sched.load_state_dict(sstate)
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])

    def save_checkpoint(self) -> None:
        atomic_save(self.state_dict(), self.checkpoint_path)

    def _log(self, losses: dict[str, float]) -> None:
        with open(self.loss_log_path, "a") as f:
            f.write(json.dumps({"iter": self.iteration, **losses}) + "\n")

    def _trim_log(self) -> None:
        """After a resume, drop logged iterations newer than the checkpoint."""
        if not self.loss_log_path.exists():
            return
        lines = [ln for ln in self.loss_log_path.read_text().splitlines()
                 if ln.strip() and json.loads(ln)["iter"] <= self.iteration]
        self.loss_log_path.write_text("".join(ln + "\n" for ln in lines))

    # -- the run ------------------------------------------------------------------
    def run(self, resume: bool = False) -> nn.Module:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.exists():
            self.load_state_dict(load_file(self.checkpoint_path, map_location=self.device))
            self._trim_log()
        else:
            self.loss_log_path.unlink(missing_ok=True)
            self.calibrate(self.cfg.calib_batches)
        bar = tqdm(total=self.cfg.iters, initial=self.iteration, desc="zaq", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            with _StopOnCtrlC() as stop:
                while self.iteration < self.cfg.iters and not stop.requested:
                    losses = self.step()
                    self._check_finite(losses)
                    self._log(losses)
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
                    if self.iteration % self.cfg.checkpoint_interval == 0:
                        self.save_checkpoint()
        finally:
            bar.close()
        if stop.requested:
            self.save_checkpoint()
            raise Interrupted(f"interrupted at iteration {self.iteration}; checkpoint saved to "
                              f"{self.checkpoint_path}; rerun with --resume to continue")
        self.save_checkpoint()
        if self.cfg.recalibrate_at_end:
            self.calibrate(self.cfg.calib_batches)
        atomic_save(self.generator.state_dict(), self.work_dir / "generator.pth")
        self.qmodel.eval()
        return self.qmodel
