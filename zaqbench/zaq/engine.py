"""The one adversarial loop of ZAQ, written against the adapter interface only.

Per iteration: ``q_steps`` updates of Q minimising D_o + alpha * D_f on a
detached generated batch, then one update of G minimising
-D_o - alpha * D_f - beta * L_a. The returned Q is the last iterate or, with
``returned_iterate='probe'``, the scored iterate closest to P on distilled
probe images (zaqbench/zaq/selection.py): never chosen by test accuracy or any
real image.

Nothing here is global: every random draw comes from a ``torch.Generator`` the
trainer owns (plus the global RNG state, which is saved too for layers that
use it), and the device is the adapter's.

Under ``torchrun`` (zaqbench/distributed.py) every rank draws the same global z
with the shared generator and computes its own rows of it, so the run is the
same whatever the number of ranks (up to float summation order) and a
checkpoint resumes with any number of them. G's BatchNorm layers (and Q's, when
they train) use the global batch's statistics; Q's and G's gradients are
averaged by DistributedDataParallel; rank 0 alone writes files.
"""
from __future__ import annotations

import copy
import json
import math
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .. import distributed
from ..adapter import TaskAdapter
from ..checkpoint import atomic_save, load_file
from .loss_log import append_loss_entry, truncate_loss_log
from .diagnostics import bn_drift, clip_fractions, image_stats, weight_drift
from .discrepancy import (RELATION_GUARDS, activation_regularizer, layer_discrepancies, layer_weights,
                           output_discrepancy, zero_feature_vectors)
from ..errors import UserError
from ..progress import progress_bar
from ..options import (Options, OptionError, Rule, boolean, build_options, fraction, hashed_fields, is_number,
                       non_negative, one_of, option, positive, positive_int, sequence_of)
from .features import forward_with_features
from .generator import GENERATOR_OUTPUTS, Generator
from ..quant import (calibrate_activations, load_quantizer_state, quant_layers, quantizer_state,
                    set_act_observing)
from .selection import PROBE_SEED_OFFSET, ProbeSelection
from .trust_region import GridScaledUpdates, ProximalPull, WeightTrustRegion
from .zeroq import bn_statistics_terms, distill_batch


FEATURE_WEIGHTS = ("uniform", "adaptive")
ACT_RANGES = ("frozen", "every-forward")
Q_PARAMS = ("all", "quantized-weights")
Q_OPTIMIZERS = ("sgd", "adam-grid")
RETURNED_ITERATES = ("last", "probe")

learning_rate = Rule(positive.test, "a learning rate > 0")
betas = sequence_of(lambda b: is_number(b) and 0 <= b < 1, "two numbers in [0, 1), e.g. [0.9, 0.999]", length=2)
milestones = sequence_of(lambda f: is_number(f) and 0 < f < 1,
                         "fractions of iters in (0, 1), or () for a constant rate")
#: the probes' distillation rate: 100 steps bring MobileNetV2's BN-statistics loss from 228 to 55 (ZeroQ's 0.5 is
#: tuned for its 500 steps)
PROBE_LR = 0.2
decay_factor = Rule(lambda v: is_number(v) and 0 < v <= 1, "a factor in (0, 1]")


@dataclass
class LoopConfig(Options):
    """The knobs of the loop that trains Q on generated images, shared by ZAQ and GDFQ; the
    defaults are the official ZAQ code's."""

    section: ClassVar[str] = "methods.zaq"

    iters: int = option(18000, positive_int, help="loop iterations (official: 300 epochs x 60 iterations)")
    q_steps: int = option(5, positive_int, help="Q updates per generator update")
    batch_size: int = option(256, positive_int, help="generated images per batch (the global batch under torchrun)")
    nz: int = option(256, positive_int, help="generator noise dimension")
    generator_channels: int = option(128, positive_int, help="the generator's width")
    gen_output: str = option("bn", one_of(*GENERATOR_OUTPUTS),
                             help="'bn' (official: Tanh + BatchNorm) | 'valid-range' (images in [0, 1] pixels)")
    g_lr: float = option(1e-3, learning_rate, help="the generator's Adam learning rate")
    g_betas: tuple[float, float] = option((0.9, 0.999), betas, help="the generator's Adam betas")
    q_lr: float = option(0.1, learning_rate, help="Q's learning rate (grid steps per update with 'adam-grid')")
    q_momentum: float = option(0.9, non_negative, help="Q's SGD momentum")
    q_weight_decay: float = option(5e-4, non_negative, help="Q's SGD weight decay")
    # Stabilisers. Each default is the official code's behaviour (off); the CPU configs switch them
    # on, and each has an ablation row (README, "A ZAQ that holds up").
    q_optimizer: str = option("sgd", one_of(*Q_OPTIMIZERS),
                              help="'sgd' (official) | 'adam-grid': Adam moving each weight ~q_lr grid steps")
    q_params: str = option("all", one_of(*Q_PARAMS), help="what Q trains: 'all' (official) | 'quantized-weights'")
    q_trust_steps: float = option(0.0, non_negative,
                                  help="> 0: keep Q's weights within this many quantization steps of P's")
    q_bn_update: bool = option(True, boolean, help="Q's BN layers in train mode (official) or frozen")
    lr_milestones: tuple[float, ...] = option((1 / 3, 2 / 3), milestones,
                                              help="where both learning rates drop, as fractions of iters")
    lr_gamma: float = option(0.1, decay_factor, help="the learning rates' factor at each milestone")
    calib_batches: int = option(4, positive_int, help="generated batches that set Q's activation ranges")
    recalibrate_at_end: bool = option(True, boolean, help="re-set the ranges on the trained G's images")
    checkpoint_interval: int = option(50, positive_int, recorded=False,
                                      help="iterations between checkpoints (book-keeping: resuming gives the same Q)")
    bns_weight: float = option(0.0, non_negative,
                               help="weight of a BN-statistics prior on the generator (P's running statistics)")
    # Which iterate the run returns (zaqbench/zaq/selection.py): the official code returns the last.
    returned_iterate: str = option("last", one_of(*RETURNED_ITERATES), since=3,
                                   help="'last' (official) | 'probe': the iterate, the calibrated start included, "
                                        "closest to P on BN-statistics-distilled probe images")
    probe_images: int = option(16, positive_int, since=3, help="distilled probe images ('probe')")
    probe_distill_iters: int = option(100, positive_int, since=3, help="the probes' distillation steps ('probe')")
    probe_interval: int = option(10, positive_int, since=3, help="iterations between scored iterates ('probe')")
    probe_z: float = option(0.0, non_negative, since=3,
                            help="> 0 ('probe'): a later iterate replaces the kept one only if its per-image D_o "
                                 "is lower by more than this many standard errors")

    def check_combination(self) -> None:
        for name, on in self.weight_space_options():
            if on and self.q_params == "all":
                raise OptionError(f"{{section}}.{name}={getattr(self, name)!r} works on the quantized weights only; "
                                  "set {section}.q_params='quantized-weights' with it")

    def weight_space_options(self) -> list[tuple[str, bool]]:
        """The options measured in Q's weight grid, and whether each is on."""
        return [("q_trust_steps", bool(self.q_trust_steps)), ("q_optimizer", self.q_optimizer != "sgd")]

    def to_dict(self) -> dict[str, Any]:
        """What is hashed (:func:`zaqbench.options.hashed_fields`), also into checkpoints."""
        return hashed_fields(self)


@dataclass
class ZAQConfig(LoopConfig):
    """Every knob of ZAQ's loop, with the official code's defaults."""

    alpha: float = option(1.0, non_negative, help="weight of the feature-level discrepancy D_f")
    beta: float = option(0.1, non_negative, help="weight of the activation regulariser L_a")
    feature_weights: str = option("uniform", one_of(*FEATURE_WEIGHTS),
                                  help="D_f's layer weights: 'uniform' (official) | 'adaptive'")
    relation_pool_size: int = option(32, positive_int, help="feature maps above this^2 positions are pooled")
    q_prox_weight: float = option(0.0, non_negative, since=2,
                                  help="> 0: add this * 1/2 sum ((W_q - W_p) / step)^2 to Q's loss")
    q_anchor_fraction: float = option(0.0, fraction, since=2,
                                      help="share of each Q-step batch drawn from the untrained G's images")
    # The official code's loop (the 'zaq-official' method sets these; README "The official code, reproduced")
    act_ranges: str = option("frozen", one_of(*ACT_RANGES), since=2,
                             help="'frozen' after calibration | 'every-forward': every Q forward widens them")
    relation_guard: str = option("clamp", one_of(*RELATION_GUARDS), since=2,
                                 help="D_f's norm: 'clamp' at 1e-12 | 'exact' (and stop on zero vectors) | 'safe'")

    def weight_space_options(self) -> list[tuple[str, bool]]:
        trust, optimizer = super().weight_space_options()
        return [trust, ("q_prox_weight", bool(self.q_prox_weight)), optimizer]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "ZAQConfig":
        return build_options(cls, cfg)


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


def trainable_q_parameters(qmodel: nn.Module, which: str) -> list[nn.Parameter]:
    """Q's parameters the optimiser updates; the others are frozen (``requires_grad=False``).

    ``all``: every parameter (official). ``quantized-weights``: only the weights of the
    quantized layers -- full-precision layers, biases and BN affine parameters stay P's.
    """
    if which == "all":
        return list(qmodel.requires_grad_(True).parameters())
    qmodel.requires_grad_(False)
    weights = [layer.weight for _, layer in quant_layers(qmodel) if layer.weight_quant.active]
    if not weights:
        raise UserError("methods.zaq.q_params='quantized-weights' but the model has no quantized weights")
    for w in weights:
        w.requires_grad_(True)
    return weights


class ZAQTrainer:
    """Trains Q (and G) against the frozen teacher P for ``cfg.iters`` iterations.

    ``snapshot_iters``: iterations (0 = right after calibration) at which the model the run
    would return is saved under ``snapshots/`` for budget curves; reporting only.

    Subclasses with another objective (GDFQ) override ``step`` and, for another generator,
    ``build_generator`` / ``draw``; optimisers, checkpoints, calibration and the loop are shared.
    """

    name = "zaq"  # progress bar and error messages
    trains_generator = True  # False: a subclass whose batches come from elsewhere (real data)

    def __init__(self, adapter: TaskAdapter, teacher: nn.Module, qmodel: nn.Module,
                 cfg: ZAQConfig, work_dir: Path, seed: int, progress: bool = True,
                 snapshot_iters: tuple[int, ...] = ()) -> None:
        self.adapter = adapter
        self.device = adapter.device
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.progress = progress
        self.snapshot_iters = frozenset(int(i) for i in snapshot_iters)
        self.feature_names = list(adapter.feature_names)
        self.teacher = teacher.eval().requires_grad_(False)
        self.rows = distributed.local_slice(cfg.batch_size)  # this rank's rows of each global batch
        self.qmodel = distributed.global_batchnorm(qmodel) if cfg.q_bn_update else qmodel
        q_params = trainable_q_parameters(qmodel, cfg.q_params)
        self.trust_region = WeightTrustRegion(qmodel, cfg.q_trust_steps) if cfg.q_trust_steps else None
        self.prox = ProximalPull(qmodel) if cfg.q_prox_weight else None
        self.seed = seed
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        torch.manual_seed(seed)
        self.generator = distributed.global_batchnorm(self.build_generator().to(self.device))
        self.anchors = self._anchor_images() if cfg.q_anchor_fraction else []
        if cfg.q_optimizer == "adam-grid":
            # q_lr is in grid steps per update; weight decay would pull towards 0, not towards P
            self.opt_q = torch.optim.Adam(q_params, lr=cfg.q_lr)
            self.grid_updates: GridScaledUpdates | None = GridScaledUpdates(qmodel)
        else:
            self.opt_q = torch.optim.SGD(q_params, lr=cfg.q_lr, momentum=cfg.q_momentum,
                                         weight_decay=cfg.q_weight_decay)
            self.grid_updates = None
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.g_lr, betas=cfg.g_betas)
        milestones = sorted({max(1, round(f * cfg.iters)) for f in cfg.lr_milestones})
        self.sched_q = torch.optim.lr_scheduler.MultiStepLR(self.opt_q, milestones, cfg.lr_gamma)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, milestones, cfg.lr_gamma)
        self.iteration = 0
        self.diagnostics: dict[str, Any] = {}
        self.selection: ProbeSelection | None = None  # made by run() with 'probe'
        self.returned_iteration = 0  # which iterate the last model_to_return() gave
        # DistributedDataParallel over Q and G (themselves in one process). Q's wrapper is
        # called only in the Q steps: the G step runs the bare Q, whose gradients it does not
        # need (backward(inputs=G's parameters)); going through DDP there would arm its
        # reducer for gradients that never come and fail the next iteration.
        self.q_ddp = distributed.wrap_ddp(self.qmodel, self.device)
        self.g_ddp = distributed.wrap_ddp(self.generator, self.device)

    # -- pieces ---------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.pth"

    @property
    def loss_log_path(self) -> Path:
        return self.work_dir / "losses.jsonl"

    def build_generator(self) -> nn.Module:
        return Generator(self.adapter.input_spec, self.cfg.nz, self.cfg.generator_channels, self.cfg.gen_output)

    def draw(self, rng: torch.Generator, generator: nn.Module | None = None) -> torch.Tensor:
        """This rank's rows of one generated global batch, (batch_size / W, C, H, W); every random
        draw from ``rng`` (the whole batch's z, so any number of ranks computes the same batch)."""
        z = torch.randn(self.cfg.batch_size, self.cfg.nz, generator=rng, device=self.device)
        return (generator or self.generator)(z[self.rows])

    def sample(self) -> torch.Tensor:
        """A training batch: through G's DistributedDataParallel wrapper, so G's gradients are averaged."""
        return self.draw(self.rng, self.g_ddp)

    def _anchor_images(self) -> list[torch.Tensor]:
        """``calib_batches`` batches (this rank's rows) from the untrained G, drawn from their own
        RNG with G's buffers restored, so training is otherwise unchanged and a resumed run (whose
        G is still the untrained one here, before its checkpoint is loaded) gets the same set."""
        rng = torch.Generator(device=self.device).manual_seed(self.seed + 2_000_003)
        buffers = {k: v.clone() for k, v in self.generator.named_buffers()}
        self.generator.train()
        with torch.no_grad():
            images = [self.draw(rng) for _ in range(self.cfg.calib_batches)]
            for name, buf in self.generator.named_buffers():
                buf.copy_(buffers[name])
        return images

    def q_batch(self, k: int) -> torch.Tensor:
        """The k-th Q step's batch: G's images, with ``q_anchor_fraction`` of the rows replaced by
        images of the untrained G (the anchor set, cycled), so Q keeps matching P on ordinary
        generated images while it learns the adversarial ones."""
        with torch.no_grad():
            x = self.sample()
        if not self.anchors:
            return x
        n_anchor = round(self.cfg.q_anchor_fraction * x.shape[0])
        anchor = self.anchors[(self.iteration * self.cfg.q_steps + k) % len(self.anchors)]
        return torch.cat([x[:x.shape[0] - n_anchor], anchor[:n_anchor]])

    @property
    def snapshot_dir(self) -> Path:
        return self.work_dir / "snapshots"

    def _discrepancy(self, x: torch.Tensor, p_grad: bool, bn_prior: bool = False,
                     q_via: nn.Module | None = None) -> dict[str, Any]:
        """D_o, D_f (and its per-layer terms), L_a and, with ``bn_prior``, P's BN-statistics loss.
        ``q_via``: Q's DistributedDataParallel wrapper, to call instead of Q."""
        forward = self.adapter.forward_raw
        zero = torch.zeros((), device=self.device)
        with torch.set_grad_enabled(p_grad):
            if bn_prior:
                with bn_statistics_terms(self.teacher, global_batch=True) as terms:
                    p_out, p_feats = forward_with_features(self.teacher, self.feature_names, forward, x)
                bns = torch.stack(terms).mean()
            else:
                p_out, p_feats = forward_with_features(self.teacher, self.feature_names, forward, x)
                bns = zero
        q_out, q_feats = forward_with_features(self.qmodel, self.feature_names, forward, x, via=q_via)
        d_o = output_discrepancy(q_out, p_out)
        zeros: dict[str, int] = {}
        if self.cfg.alpha:
            per_layer = layer_discrepancies(q_feats, p_feats, self.cfg.relation_pool_size, self.cfg.relation_guard)
            d_f = (layer_weights(per_layer, self.cfg.feature_weights) * per_layer).sum()
            if self.cfg.relation_guard == "exact":
                counts = zero_feature_vectors(q_feats, self.cfg.relation_pool_size)
                zeros = {name: n for name, n in zip(self.feature_names, counts) if n}
        else:
            per_layer, d_f = None, zero
        return {"d_o": d_o, "d_f": d_f, "l_a": activation_regularizer(p_feats), "bns": bns,
                "d_f_layers": per_layer, "zero_vectors": zeros}

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
            raise DivergenceError(f"{self.name.upper()} diverged at iteration {self.iteration}: {', '.join(bad)} "
                                  f"is not finite; {kept}; lower q_lr/g_lr and rerun")

    def _check_zero_vectors(self, zeros: dict[str, int], where: str, params: list[nn.Parameter]) -> None:
        """``relation_guard='exact'``: after a step whose D_f divided all-zero feature vectors of Q by
        the 1e-12 norm clamp (as the official code does), stop with what happened. The step was
        taken, as in the official code; the run ends here, like the NaN guard. Under torchrun the
        ranks agree (a rank's rows may have no zero vector), so all of them stop together."""
        if self.cfg.relation_guard != "exact":
            return
        if distributed.is_distributed():
            if distributed.all_sum([float(sum(zeros.values()))])[0] == 0:
                return
        elif not zeros:
            return
        grads = [p.grad.detach().abs().max() for p in params if p.grad is not None]
        largest = float(torch.stack(grads).max()) if grads else float("nan")
        kept = f"last good checkpoint kept at {self.checkpoint_path}" if self.checkpoint_path.exists() \
            else "no checkpoint was written yet"
        layers = ", ".join(f"{n} in {name}" for name, n in zeros.items())
        raise DivergenceError(
            f"{self.name.upper()} diverged at iteration {self.iteration + 1} ({where}): Q's features have all-zero "
            f"vectors ({layers}); relation_guard='exact' divides them by their norm clamped at 1e-12 as the "
            f"official code does, so their gradient is scaled by 1e12 (largest |gradient| {largest:.3g}) and "
            f"this step wrecks the model, as it would in the official code; {kept}; set the method's "
            f"relation_guard='safe' (--cfg-options methods.<method>.relation_guard=safe) to give all-zero "
            f"vectors no gradient (same loss values)")

    def update_q(self, loss_q: torch.Tensor) -> None:
        """One optimiser step of Q on ``loss_q``, with the proximal pull, grid scaling and trust
        region if on."""
        if self.prox is not None:
            loss_q = loss_q + self.cfg.q_prox_weight * self.prox.penalty()
        self.opt_q.zero_grad(set_to_none=True)
        loss_q.backward()
        if self.grid_updates is not None:
            self.grid_updates.remember()
        self.opt_q.step()
        if self.grid_updates is not None:
            self.grid_updates.rescale()
        if self.trust_region is not None:
            self.trust_region.project()

    def step(self) -> dict[str, float]:
        """One ZAQ iteration: q_steps Q updates, then one G update."""
        cfg = self.cfg
        self.generator.train()
        self._set_q_mode()
        # 'every-forward': every forward of Q in the loop widens its activation ranges (the official
        # code's QuantAct, never frozen); evaluation and the returned model use them frozen
        set_act_observing(self.qmodel, cfg.act_ranges == "every-forward")
        try:
            loss_q, _, _ = self.q_updates()
            loss_g, x, d, clipped = self.generator_step()
        finally:
            set_act_observing(self.qmodel, False)
        self.sched_q.step()
        if self.trains_generator:
            self.sched_g.step()
        self.iteration += 1
        self.diagnostics = self._diagnostics(x, d, clipped)
        local = {"loss_q": loss_q, "loss_g": loss_g, "d_o": d["d_o"], "d_f": d["d_f"], "l_a": d["l_a"],
                 "bns": d["bns"]}
        # the losses of the global batch (means of the ranks' means): the same numbers on every
        # rank, so the divergence check stops all of them together
        return dict(zip(local, distributed.all_mean([v.item() for v in local.values()])))

    def q_updates(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The q_steps updates of Q (minimise D_o + alpha D_f); (last loss, last batch, its terms)."""
        cfg = self.cfg
        for k in range(cfg.q_steps):
            x = self.q_batch(k)
            d = self._discrepancy(x, p_grad=False, q_via=self.q_ddp)
            loss_q = d["d_o"] + cfg.alpha * d["d_f"]
            self.update_q(loss_q)
            self._check_zero_vectors(d["zero_vectors"], f"Q step {k + 1}",
                                     [p for g in self.opt_q.param_groups for p in g["params"]])
        return loss_q, x, d

    def generator_step(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, float]]:
        """One update of G (maximise the discrepancy); (loss, batch, its terms, clip fractions)."""
        cfg = self.cfg
        x = self.sample()
        with clip_fractions(self.qmodel) as clipped:
            d = self._discrepancy(x, p_grad=True, bn_prior=cfg.bns_weight > 0)
        loss_g = -d["d_o"] - cfg.alpha * d["d_f"] - cfg.beta * d["l_a"] + cfg.bns_weight * d["bns"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(self.generator.parameters()))  # Q's gradients are not needed here
        self.opt_g.step()
        self._check_zero_vectors(d["zero_vectors"], "generator step", list(self.generator.parameters()))
        return loss_g, x, d, clipped

    def _diagnostics(self, x: torch.Tensor, d: dict[str, Any], clipped: dict[str, float]) -> dict[str, Any]:
        """Observed on the generator step's batch; logged beside the losses, never used in training."""
        per_layer = d["d_f_layers"]
        return {
            **image_stats(x.detach(), self.adapter.input_spec),
            "d_f_layers": [round(v, 6) for v in per_layer.tolist()] if per_layer is not None else [],
            "clipped": {k: round(v, 6) for k, v in clipped.items()},
            "w_drift": weight_drift(self.qmodel, self.teacher),
            "w_drift_steps": self.trust_region.drift_in_steps() if self.trust_region is not None else None,
            "bn_drift": bn_drift(self.qmodel, self.teacher),
            "q_lr": self.opt_q.param_groups[0]["lr"],
        }

    def calibrate(self, batches: int, model: nn.Module | None = None, rng: torch.Generator | None = None) -> None:
        """Set the activation ranges of Q (or ``model``) on generated images (no real data).
        G stays in train mode, as in the loop, so the images are the ones Q is trained on;
        with ``rng`` the draws leave the training RNG and G's buffers as they were."""
        self.generator.train()
        g_buffers = {k: v.clone() for k, v in self.generator.named_buffers()}
        with torch.no_grad():
            samples = [self.draw(rng or self.rng) for _ in range(batches)]  # this rank's rows; ranges reduced after
            if rng is not None:  # G's BN running stats are never used, but keep its state untouched
                for name, buf in self.generator.named_buffers():
                    buf.copy_(g_buffers[name])
        calibrate_activations(model if model is not None else self.qmodel, samples, self.adapter.forward_raw)

    def returned_model(self) -> nn.Module:
        """The model the run returns if it ends now: Q, or with ``recalibrate_at_end`` a copy of Q
        whose ranges are re-set on the current G's images (drawn from a separate RNG, so the
        training itself is the same whenever this is called)."""
        if not self.cfg.recalibrate_at_end:
            return self.qmodel
        model = copy.deepcopy(self.qmodel)
        rng = torch.Generator(device=self.device).manual_seed(self.seed + 1_000_003)
        self.calibrate(self.cfg.calib_batches, model=model, rng=rng)
        return model

    def probe_images(self) -> torch.Tensor:
        """The distilled probe batch (probe_images, C, H, W), from P alone and an RNG of its own."""
        rng = torch.Generator(device=self.device).manual_seed(self.seed + PROBE_SEED_OFFSET)
        images, _ = distill_batch(self.adapter, self.teacher, self.cfg.probe_images, self.cfg.probe_distill_iters,
                                  PROBE_LR, rng, self.progress)
        return images

    def offer_iterate(self) -> None:
        """With 'probe': score the model the run would return now (every probe_interval iterations)."""
        if self.selection is not None and self.iteration % self.cfg.probe_interval == 0:
            self.selection.offer(self.iteration, self.returned_model())

    def model_to_return(self) -> nn.Module:
        """The model the run returns if it ends now: :meth:`returned_model`, or with 'probe' the best
        of it and the iterates scored so far (``returned_iteration`` says which)."""
        model = self.returned_model()
        self.returned_iteration = self.iteration
        if self.selection is None:
            return model
        if model is self.qmodel:  # the kept iterate is loaded into the copy, never into the training Q
            model = copy.deepcopy(model)
        model, self.returned_iteration = self.selection.choose(self.iteration, model)
        return model

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
            "config": json.dumps(self.cfg.to_dict()),
            **({"selection": self.selection.state_dict()} if self.selection is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if json.loads(state.get("config") or "null") != json.loads(json.dumps(self.cfg.to_dict())):  # any key order
            raise UserError(f"{self.checkpoint_path} was written with a different {self.name.upper()} config; "
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
        if self.cfg.returned_iterate == "probe":
            self.selection = ProbeSelection(self.teacher, state["selection"]["images"], self.adapter.forward_raw,
                                            self.cfg.probe_z)
            self.selection.load_state_dict(state["selection"])

    def save_checkpoint(self) -> None:
        if distributed.is_main():
            atomic_save(self.state_dict(), self.checkpoint_path)

    def _log(self, losses: dict[str, float]) -> None:
        if distributed.is_main():
            append_loss_entry(self.loss_log_path, {"iter": self.iteration, **losses, **self.diagnostics})

    def save_snapshot(self) -> None:
        """The model this run would return if it ended now (weights + activation ranges)."""
        if self.iteration in self.snapshot_iters:
            model = self.model_to_return()  # every rank: recalibration reduces over ranks
            if not distributed.is_main():
                return
            atomic_save({"iteration": self.iteration, "qmodel": model.state_dict(),
                         "quantizer": quantizer_state(model), "returned_iteration": self.returned_iteration},
                        self.snapshot_dir / f"iter_{self.iteration:06d}.pth")

    # -- the run ------------------------------------------------------------------
    def run(self, resume: bool = False) -> nn.Module:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.exists():
            self.load_state_dict(load_file(self.checkpoint_path, map_location=self.device,
                                           remake="rerun without --resume to train the run again"))
            if distributed.is_main():
                truncate_loss_log(self.loss_log_path, self.iteration)  # drops a torn last line too
        else:
            if distributed.is_main():
                self.loss_log_path.unlink(missing_ok=True)
                for old in self.snapshot_dir.glob("iter_*.pth"):
                    old.unlink()
            self.calibrate(self.cfg.calib_batches)
            if self.cfg.returned_iterate == "probe":
                self.selection = ProbeSelection(self.teacher, self.probe_images(), self.adapter.forward_raw,
                                                self.cfg.probe_z)
                self.offer_iterate()  # the calibrated start is a candidate
            self.save_snapshot()
        bar = progress_bar(self.cfg.iters, self.name, self.progress, initial=self.iteration)
        try:
            with _StopOnCtrlC() as stop:
                while self.iteration < self.cfg.iters and not self._stop_requested(stop):
                    losses = self.step()
                    self._check_finite(losses)
                    self._log(losses)
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
                    self.offer_iterate()
                    self.save_snapshot()
                    if self.iteration % self.cfg.checkpoint_interval == 0:
                        self.save_checkpoint()
        finally:
            bar.close()
        if stop.requested:
            self.save_checkpoint()
            raise Interrupted(f"interrupted at iteration {self.iteration}; checkpoint saved to "
                              f"{self.checkpoint_path}; rerun with --resume to continue")
        self.save_checkpoint()
        if distributed.is_main():
            atomic_save(self.generator.state_dict(), self.work_dir / "generator.pth")
        model = self.model_to_return().eval()
        if self.selection is not None and distributed.is_main():
            print(f"[zaqbench] {self.name}: returning iteration {self.returned_iteration} of {self.iteration} "
                  f"(D_o on the distilled probes: {self.selection.scores})", file=sys.stderr)
        return model

    @staticmethod
    def _stop_requested(stop: "_StopOnCtrlC") -> bool:
        """Ctrl-C on any rank stops every rank at the same iteration (no rank left waiting)."""
        if not distributed.is_distributed():
            return stop.requested
        stop.requested = distributed.all_sum([float(stop.requested)])[0] > 0
        return stop.requested
