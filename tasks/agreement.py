"""Agreement with the full-precision model P on self-labelled classification data.

When the evaluation labels are P's own predictions (photo views filed under the class P
predicts), top-1 is "agreement with P", and it is fragile: a view on which P hesitates between
two near-tied classes counts as a full error when the quantized model Q swaps them. Beside
top-1, these metrics say how far Q really is from P:

* ``top5``: P's top-1 class is within Q's top-5 (% of the views);
* ``kl_fp``: the mean KL(P || Q) over the views, in nats, from the softmax of both models' logits;
* ``top1_confident``: Q's top-1 agrees with P's on the views where P's top probability is above
  ``CONFIDENT_P`` (%), left out when there is no such view;
* ``confident_fraction``: the share of such views (0..1).

They need P's logits on the same views. ``FPLogitsCache`` keeps them once per evaluation set,
keyed by a fingerprint of P's weights, so another full-precision model never reuses them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

#: P counts as confident on a view when its top softmax probability is above this
CONFIDENT_P = 0.5
#: Q's top-k in which P's top-1 class must appear
TOP_K = 5


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex) of every parameter and buffer: name, dtype, shape and bytes. Two models
    with the same fingerprint compute the same function, so they may share cached logits."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class FPLogits:
    """P's logits (N, C) float32 and the labels (N,) of one evaluation set, in evaluation order."""

    logits: torch.Tensor
    labels: torch.Tensor


class FPLogitsCache:
    """P's logits per (weights fingerprint, evaluation-set key): computed once, then reused by
    every evaluation of a quantized model on the same set (budget curves evaluate many). Held in
    memory: N x C float32, e.g. 200 MB for ImageNet's 50,000 validation images."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], FPLogits] = {}

    def get(self, fp_fingerprint: str, eval_key: str) -> FPLogits | None:
        return self._entries.get((fp_fingerprint, eval_key))

    def put(self, fp_fingerprint: str, eval_key: str, entry: FPLogits) -> None:
        self._entries[(fp_fingerprint, eval_key)] = entry


@dataclass
class AgreementSums:
    """Sums over the views of one evaluation; ``add`` takes one batch, ``metrics`` the result.

    With ``reference`` None the batches are P's own (the evaluation that fills the cache): each
    batch is compared with itself and its logits are kept for ``recorded``."""

    reference: FPLogits | None = None
    views: int = 0
    top5: int = 0
    kl_sum: float = 0.0
    confident: int = 0
    confident_agree: int = 0
    _offset: int = 0
    _recorded: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """``logits`` (B, C) of the evaluated model and ``labels`` (B,) of the same views."""
        logits = logits.detach().float().cpu()
        if self.reference is None:
            self._recorded.append((logits, labels.clone()))
            fp = logits
        else:
            end = self._offset + len(labels)
            if end > len(self.reference.labels) or \
                    not torch.equal(self.reference.labels[self._offset:end], labels):
                raise RuntimeError("the evaluation views differ from those P's cached logits were computed on")
            fp = self.reference.logits[self._offset:end]
            self._offset = end
        for name, value in batch_agreement(logits, fp).items():
            setattr(self, name, getattr(self, name) + value)
        self.views += len(labels)

    def recorded(self) -> FPLogits:
        """P's logits of the views added, when this evaluation was P's own."""
        return FPLogits(torch.cat([lg for lg, _ in self._recorded]), torch.cat([y for _, y in self._recorded]))

    def totals(self) -> list[float]:
        return [self.views, self.top5, self.kl_sum, self.confident, self.confident_agree]


def batch_agreement(logits: torch.Tensor, fp_logits: torch.Tensor) -> dict[str, float]:
    """Per-batch sums for ``AgreementSums``: ``logits`` of Q and ``fp_logits`` of P, both (B, C).

    Log-softmax in float64, so that P compared with its own logits gives a KL of exactly 0; a class
    to which P gives probability 0 adds nothing (0 log 0 = 0)."""
    log_q = F.log_softmax(logits.double(), dim=1)
    log_p = F.log_softmax(fp_logits.double(), dim=1)
    p = log_p.exp()
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)  # (B,)
    fp_top1 = fp_logits.argmax(1)  # (B,)
    k = min(TOP_K, logits.shape[1])
    in_top5 = (logits.topk(k, dim=1).indices == fp_top1[:, None]).any(1)
    confident = p.max(1).values > CONFIDENT_P
    agree = logits.argmax(1) == fp_top1
    return {"top5": int(in_top5.sum()), "kl_sum": float(kl.sum()), "confident": int(confident.sum()),
            "confident_agree": int((agree & confident).sum())}


def agreement_metrics(views: float, top5: float, kl_sum: float, confident: float,
                      confident_agree: float) -> dict[str, float]:
    """The extra metrics from the sums (over every rank under torchrun)."""
    metrics = {"top5": 100.0 * top5 / max(1.0, views), "kl_fp": kl_sum / max(1.0, views),
               "confident_fraction": confident / max(1.0, views)}
    if confident:
        metrics["top1_confident"] = 100.0 * confident_agree / confident
    return metrics
