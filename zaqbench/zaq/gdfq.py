"""GDFQ: generative low-bitwidth data-free quantization (Xu et al., ECCV 2020).

A generator, conditioned on a class label, is trained against the *fixed*
full-precision model P: cross-entropy of P's prediction against the label
plus the BN-statistics loss (each BN layer's batch mean/std of its input
against P's running statistics). Q is fine-tuned on the generated images by
distillation from P. Unlike ZAQ there is no min-max: G never sees Q.

Where P's raw output is not one logit vector per image (detection,
segmentation) there is no image-level label: the label-free form
``gdfq-bns`` trains G on the BN-statistics loss alone and distils Q with
ZAQ's output-level L1 (D_o) on the raw outputs. The row's ``calib_data``
names the form that ran.

Everything except the objective (optimisers, trust region, checkpoints,
calibration, NaN guard, the loop) is the ZAQ trainer's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import InputSpec, TaskAdapter
from .discrepancy import output_discrepancy
from .engine import LoopConfig, ZAQTrainer
from ..options import non_negative, one_of, option, positive, redefault
from .generator import Generator
from .zeroq import bn_statistics_terms

LABEL_MODES = ("auto", "none")


@dataclass
class GDFQConfig(LoopConfig):
    """The loop's knobs (shared with ZAQ) plus GDFQ's loss weights."""

    section: ClassVar[str] = "methods.gdfq"
    # ZAQ's terms that GDFQ does not have, at the values that switch them off (the shared trainer reads them)
    alpha: ClassVar[float] = 0.0
    beta: ClassVar[float] = 0.0
    feature_weights: ClassVar[str] = "uniform"
    relation_pool_size: ClassVar[int] = 32
    q_prox_weight: ClassVar[float] = 0.0
    q_anchor_fraction: ClassVar[float] = 0.0
    act_ranges: ClassVar[str] = "frozen"
    relation_guard: ClassVar[str] = "clamp"

    q_steps: int = redefault(LoopConfig, "q_steps", 1)  # GDFQ: one Q update per generator update
    bns_weight: float = redefault(LoopConfig, "bns_weight", 0.1)  # GDFQ: L_G = CE + 0.1 * BNS
    ce_weight: float = option(1.0, non_negative, help="weight of CE(P(G(z, y)), y) in the generator loss")
    q_ce_weight: float = option(1.0, non_negative, help="weight of CE(Q(x), y) in Q's loss (GDFQ: L_Q = CE + KD)")
    kd_temperature: float = option(1.0, positive, help="temperature of Q's distillation from P")
    labels: str = option("auto", one_of(*LABEL_MODES),
                         help="'auto': label-conditioned where P emits (N, K) logits | 'none': gdfq-bns")


class ConditionalGenerator(Generator):
    """GDFQ's generator: the noise is multiplied element-wise by a learned embedding of
    the label (as in the official code), then ZAQ's generator body makes the image."""

    def __init__(self, spec: InputSpec, num_classes: int, nz: int = 256, channels: int = 128,
                 output: str = "bn") -> None:
        super().__init__(spec, nz, channels, output)
        self.num_classes = num_classes
        self.label_emb = nn.Embedding(num_classes, nz)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(N, nz), (N,) int64 -> (N, C, H, W)."""
        return super().forward(self.label_emb(labels) * z)


def logit_classes(adapter: TaskAdapter, teacher: nn.Module) -> int | None:
    """K if P's raw output on a probe batch is one (N, K) logit tensor, else None (no image label)."""
    probe = torch.zeros(adapter.input_spec.shape(2), device=adapter.device)
    was_training = teacher.training
    teacher.eval()
    with torch.no_grad():
        out = adapter.forward_raw(teacher, probe)
    teacher.train(was_training)
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 2 and out.shape[1] > 1:
        return int(out.shape[1])
    return None


def kd_loss(q_logits: torch.Tensor, p_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(p/T) || softmax(q/T)) * T^2, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(q_logits / t, dim=1), F.softmax(p_logits / t, dim=1),
                    reduction="batchmean") * t * t


class GDFQTrainer(ZAQTrainer):
    """G minimises ce_weight * CE(P(x), y) + bns_weight * BNS(P, x) with P fixed; then Q takes
    ``q_steps`` updates on KD(Q, P) + q_ce_weight * CE(Q(x), y) (label-free: D_o) on detached
    batches. ``num_classes=None`` is the label-free form."""

    name = "gdfq"

    def __init__(self, adapter: TaskAdapter, teacher: nn.Module, qmodel: nn.Module, cfg: GDFQConfig,
                 num_classes: int | None, *args: Any, **kwargs: Any) -> None:
        self.num_classes = num_classes
        self.labels: torch.Tensor | None = None  # labels of the last drawn batch
        super().__init__(adapter, teacher, qmodel, cfg, *args, **kwargs)

    def build_generator(self) -> nn.Module:
        if self.num_classes is None:
            return super().build_generator()
        return ConditionalGenerator(self.adapter.input_spec, self.num_classes, self.cfg.nz,
                                    self.cfg.generator_channels, self.cfg.gen_output)

    def draw(self, rng: torch.Generator, generator: nn.Module | None = None) -> torch.Tensor:
        """The whole batch on every process (GDFQ is not data-parallel)."""
        generator = generator or self.generator
        z = torch.randn(self.cfg.batch_size, self.cfg.nz, generator=rng, device=self.device)
        if self.num_classes is None:
            return generator(z)
        self.labels = torch.randint(0, self.num_classes, (self.cfg.batch_size,), generator=rng, device=self.device)
        return generator(z, self.labels)

    def generator_loss(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """CE of P on the conditioning labels and P's BN-statistics loss (mean over BN layers)."""
        with bn_statistics_terms(self.teacher) as terms:
            p_out = self.adapter.forward_raw(self.teacher, x)
        bns = torch.stack(terms).mean()
        ce = F.cross_entropy(p_out, labels) if labels is not None else torch.zeros((), device=self.device)
        return {"ce": ce, "bns": bns, "loss_g": self.cfg.ce_weight * ce + self.cfg.bns_weight * bns}

    def q_loss(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        forward = self.adapter.forward_raw
        with torch.no_grad():
            p_out = forward(self.teacher, x)
        q_out = forward(self.qmodel, x)
        if labels is None:
            kd = output_discrepancy(q_out, p_out)
            return {"kd": kd, "loss_q": kd}
        kd = kd_loss(q_out, p_out, self.cfg.kd_temperature)
        q_ce = F.cross_entropy(q_out, labels)
        return {"kd": kd, "q_ce": q_ce, "loss_q": kd + self.cfg.q_ce_weight * q_ce}

    def step(self) -> dict[str, float]:
        """One GDFQ iteration: one G update against fixed P, then q_steps Q updates."""
        self.generator.train()
        x = self.sample()
        g = self.generator_loss(x, self.labels)
        self.opt_g.zero_grad(set_to_none=True)
        g["loss_g"].backward(inputs=list(self.generator.parameters()))
        self.opt_g.step()
        self._set_q_mode()
        for _ in range(self.cfg.q_steps):
            with torch.no_grad():
                x = self.sample()
            q = self.q_loss(x, self.labels)
            self.update_q(q["loss_q"])
        self.sched_q.step()
        self.sched_g.step()
        self.iteration += 1
        self.diagnostics = self._diagnostics(x, {"d_f_layers": None}, {})
        return {k: v.item() for k, v in {**g, **q}.items()}
