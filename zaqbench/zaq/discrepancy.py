"""ZAQ's two-level discrepancy between P (full precision) and Q (quantized).

* D_o: output level, mean L1 distance between the raw outputs.
* D_f: feature level, L1 distance between *relation maps* of intermediate
  features: a spatial map (HW x HW attention) and a channel map (C x C
  attention), both computed without learnable parameters as in the paper's
  official code (0.1 * attention(x) + x on channel-L2-normalised features).
* L_a: activation regulariser, mean |last feature map of P|.

The channel-L2 normalisation divides each feature vector (one position's C values)
by its norm clamped at 1e-12, as the official code does (``F.normalize``). An all-zero
vector -- common once Q's features are quantized ReLU outputs -- then has a gradient
scaled by 1e12. ``guard='safe'`` gives such vectors a zero gradient instead; the loss
value is the same (they normalise to zero either way).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from .features import flatten_tensors

RELATION_GAMMA = 0.1  # weight of the attention term, the official code's constant
NORM_EPS = 1e-12  # F.normalize's clamp of the norm, the official code's
RELATION_GUARDS = ("clamp", "exact", "safe")  # 'exact': as 'clamp', and the engine stops on zero vectors
#: torch.profiler labels of D_f's parts
PROFILE_LABELS = {"normalise": "zaq.relation.normalise", "spatial": "zaq.relation.spatial",
                  "channel": "zaq.relation.channel"}


def output_discrepancy(q_out: Any, p_out: Any) -> torch.Tensor:
    """D_o: mean over output tensors of their mean absolute difference.

    Nested outputs (detection: per-level scores and boxes) count each tensor
    equally, so a level with many anchors does not drown the others.
    """
    q_list, p_list = flatten_tensors(q_out), flatten_tensors(p_out)
    if len(q_list) != len(p_list) or not q_list:
        raise ValueError(f"P and Q produced different output structures ({len(p_list)} vs {len(q_list)} tensors)")
    return torch.stack([F.l1_loss(q, p) for q, p in zip(q_list, p_list)]).mean()


def output_discrepancy_per_sample(q_out: Any, p_out: Any) -> torch.Tensor:
    """D_o of each sample, (N,): per output tensor the mean |q - p| over all but the batch dimension,
    averaged over tensors as :func:`output_discrepancy` does (whose value is the mean of this when
    every tensor has the batch first)."""
    q_list, p_list = flatten_tensors(q_out), flatten_tensors(p_out)
    if len(q_list) != len(p_list) or not q_list:
        raise ValueError(f"P and Q produced different output structures ({len(p_list)} vs {len(q_list)} tensors)")
    return torch.stack([(q - p).abs().flatten(1).mean(dim=1) for q, p in zip(q_list, p_list)]).mean(dim=0)


def _pooled_4d(feat: torch.Tensor, pool_size: int) -> torch.Tensor:
    """(N, C, H, W), pooled to at most pool_size^2 positions."""
    if feat.dim() == 2:
        feat = feat[:, :, None, None]
    elif feat.dim() != 4:
        feat = feat.reshape(feat.shape[0], feat.shape[1], -1, 1)
    if feat.shape[2] * feat.shape[3] > pool_size * pool_size:
        feat = F.adaptive_avg_pool2d(feat, (min(feat.shape[2], pool_size), min(feat.shape[3], pool_size)))
    return feat.float()


def _as_4d(feat: torch.Tensor, pool_size: int, guard: str = "clamp") -> torch.Tensor:
    """(N, C, H, W) with channel-wise L2 normalisation, pooled to at most pool_size^2."""
    feat = _pooled_4d(feat, pool_size)
    if guard != "safe":
        return F.normalize(feat, dim=1)
    norm = torch.linalg.vector_norm(feat, dim=1, keepdim=True)
    # where the norm is 0 the value is 0 as with the clamp, but the gradient is 0, not 1e12
    return torch.where(norm > 0, feat / norm.clamp_min(NORM_EPS), torch.zeros_like(feat))


@torch.no_grad()
def zero_feature_vectors(feats: list[torch.Tensor], pool_size: int = 32) -> list[int]:
    """Per feature map, how many positions have a norm below the clamp (all-zero vectors)."""
    return [int((torch.linalg.vector_norm(_pooled_4d(f, pool_size), dim=1) < NORM_EPS).sum()) for f in feats]


def _spatial_attention(x: torch.Tensor) -> torch.Tensor:
    """(k, C, n) -> (k, n, n): softmax over positions of the position-by-position energy."""
    return torch.softmax(torch.bmm(x.transpose(1, 2), x), dim=-1)


def _spatial_output(x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(k, C, n), (k, n, n) -> (k, C, n): 0.1 * attention(x) + x."""
    return RELATION_GAMMA * torch.bmm(x, attention.transpose(1, 2)) + x


def spatial_relation_autograd(feat: torch.Tensor) -> torch.Tensor:
    """:func:`spatial_relation` as one autograd graph over the whole batch: the definition the
    chunked version reproduces bit for bit (tests/zaq/test_discrepancy.py); it holds the
    (N, HW, HW) attention of the whole batch in memory until the backward pass."""
    x = feat.flatten(2)  # N, C, HW
    return _spatial_output(x, _spatial_attention(x))


#: attention entries one chunk of samples may hold (1 MiB of float32, cache-sized); a sample
#: whose HW x HW map is larger is a chunk of its own
SPATIAL_CHUNK_ELEMENTS = 2**18


class _ChunkedSpatialRelation(torch.autograd.Function):
    """:func:`spatial_relation_autograd`, a few samples at a time, its backward by hand.

    The forward keeps only its input; the backward recomputes each chunk's attention and runs
    the operators autograd runs for the one-graph version on that chunk, summing ``x``'s four
    gradient terms in the order autograd sums them. Every operator works sample by sample, so
    values and gradients are bit for bit the same. The one change: the attention's gradient is
    computed as (g^T x) rather than as the transpose of (x^T g) copied into place: the same
    products, summed in the same order by the BLAS (tests/zaq/test_discrepancy.py checks the bits),
    without a transposing copy that took as long as the products. Nothing of size N x HW x HW is
    ever allocated, so the maps stay in cache.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, chunk: int) -> torch.Tensor:  # (N, C, n) -> (N, C, n)
        ctx.save_for_backward(x)
        ctx.chunk = chunk
        return torch.cat([_spatial_output(c, _spatial_attention(c)) for c in x.split(chunk)])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        parts = []
        for xc, gc in zip(x.split(ctx.chunk), grad.split(ctx.chunk)):
            attention = _spatial_attention(xc)
            g_value = gc * RELATION_GAMMA  # through the 0.1 *
            dx = gc + torch.bmm(g_value, attention)  # the identity term, then the value term
            g_attention = torch.bmm(g_value.transpose(1, 2), xc)  # k, n, n
            g_energy = torch._softmax_backward_data(g_attention, attention, -1, attention.dtype)
            dx = dx + torch.bmm(xc, g_energy)  # the energy's key side, then its query side
            parts.append(dx + torch.bmm(g_energy, xc.transpose(1, 2)).transpose(1, 2))
        return torch.cat(parts), None


def spatial_relation(feat: torch.Tensor, chunk_elements: int = SPATIAL_CHUNK_ELEMENTS) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, HW): each position re-expressed through its HW x HW attention,
    softmax(x^T x), as 0.1 * x attention^T + x. On the CPU computed in chunks of samples whose
    maps hold at most ``chunk_elements`` entries, bit for bit :func:`spatial_relation_autograd`;
    on other devices (where many small kernels would cost launches, and whose libraries may pick
    another algorithm for another batch count) as that one graph."""
    if feat.device.type != "cpu":
        return spatial_relation_autograd(feat)
    x = feat.flatten(2)  # N, C, HW
    chunk = max(1, chunk_elements // (x.shape[2] * x.shape[2]))
    return _ChunkedSpatialRelation.apply(x, chunk)


def channel_relation(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, HW) through the C x C attention (softmax over max - energy)."""
    x = feat.flatten(2)
    energy = torch.bmm(x, x.transpose(1, 2))  # N, C, C
    energy = energy.max(dim=-1, keepdim=True).values - energy
    attention = torch.softmax(energy, dim=-1)
    return RELATION_GAMMA * torch.bmm(attention, x) + x


def layer_discrepancies(
    q_feats: list[torch.Tensor], p_feats: list[torch.Tensor], pool_size: int = 32, guard: str = "clamp"
) -> torch.Tensor:
    """Per-layer L1(spatial) + L1(channel) between Q's and P's relation maps, shape (L,)."""
    if len(q_feats) != len(p_feats) or not q_feats:
        raise ValueError(f"P and Q produced different feature lists ({len(p_feats)} vs {len(q_feats)})")
    if guard not in RELATION_GUARDS:
        raise ValueError(f"guard must be one of {RELATION_GUARDS}, got {guard!r}")
    per_layer = []
    for q, p in zip(q_feats, p_feats):
        # the labels name these parts in a torch.profiler trace (zaqbench bench --profile)
        with record_function(PROFILE_LABELS["normalise"]):
            q4, p4 = _as_4d(q, pool_size, guard), _as_4d(p, pool_size, guard)
        with record_function(PROFILE_LABELS["spatial"]):
            spatial = F.l1_loss(spatial_relation(q4), spatial_relation(p4))
        with record_function(PROFILE_LABELS["channel"]):
            channel = F.l1_loss(channel_relation(q4), channel_relation(p4))
        per_layer.append(spatial + channel)
    return torch.stack(per_layer)


def layer_weights(per_layer: torch.Tensor, mode: str) -> torch.Tensor:
    """w_l for D_f = sum_l w_l d_l.

    ``uniform``: w_l = 1 (the official code; alpha scales the sum).
    ``adaptive``: w_l = L * d_l / sum_k d_k with d detached: layers where Q
    currently disagrees most with P get more weight; the weights sum to L, so
    the overall scale matches ``uniform``.
    """
    if mode == "uniform":
        return torch.ones_like(per_layer)
    if mode == "adaptive":
        d = per_layer.detach()
        return len(d) * d / d.sum().clamp_min(1e-12)
    raise ValueError(f"feature_weights must be 'uniform' or 'adaptive', got {mode!r}")


def feature_discrepancy(
    q_feats: list[torch.Tensor], p_feats: list[torch.Tensor], pool_size: int = 32,
    weights: str = "uniform",
) -> torch.Tensor:
    """D_f = sum_l w_l (L1(spatial_l) + L1(channel_l))."""
    per_layer = layer_discrepancies(q_feats, p_feats, pool_size)
    return (layer_weights(per_layer, weights) * per_layer).sum()


def activation_regularizer(p_feats: list[torch.Tensor]) -> torch.Tensor:
    """L_a = mean |last feature map of P| (the generator maximises it)."""
    return p_feats[-1].abs().mean()
