"""Uniform affine fake quantization with a straight-through estimator.

By default the rounding and clamping are PyTorch's fused ``fake_quantize_per_tensor_affine``
/ ``fake_quantize_per_channel_affine`` operators: their backward pass is the
clipped straight-through estimator (gradient 1 inside the representable range,
0 outside), which is exactly what quantization-aware fine-tuning needs.

Three options reproduce the official ZAQ code's quantizer instead (the ``zaq-code``
preset): ``rounding='after-zero-point'`` (its arithmetic, :func:`official_fake_quantize`),
``ste='identity'`` (the gradient passes unchanged, also outside the range) and
``include_zero=False`` (a weight channel's range is its own [min, max]).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed

FULL_PRECISION_BITS = (16, 32)
RANGE_RULES = ("current", "minmax", "ema", "percentile", "mse")
#: the rules whose calibrated range is the mean of each batch's own range
AVERAGED_RULES = ("percentile", "mse")
PERCENTILE = 99.99  # 'percentile': each batch's range is its 0.01 % and 99.99 % quantiles
MSE_CANDIDATES = 50  # 'mse': clipping ends tried per batch and pass, evenly over 0.02 .. 1 of its min/max
MSE_SAMPLE = 2**16  # 'mse': values of a batch the search measures the error on (evenly strided)
ROUNDINGS = ("before-zero-point", "after-zero-point")  # torch's fused operators | the official code's
STES = ("clipped", "identity")
OFFICIAL_MIN_RANGE = 1e-8  # the official code clamps max - min at this before dividing


def check_bits(bits: int, what: str = "bits") -> int:
    """Bits must be 2..8, or 16/32 meaning 'leave in full precision'."""
    if not isinstance(bits, int) or not (2 <= bits <= 8 or bits in FULL_PRECISION_BITS):
        raise ValueError(f"{what}={bits!r} is not supported; use 2-8, or 16/32 for full precision")
    return bits


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid [qmin, qmax] with 2**bits levels."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def affine_qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, include_zero: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) mapping [lo, hi] onto the integer grid.

    With ``include_zero`` the range is widened to contain 0 so that zero (padding, ReLU
    output) is exact.
    """
    qmin, qmax = quant_range(bits, symmetric)
    lo, hi = lo.float(), hi.float()
    if include_zero:
        lo = torch.clamp(lo, max=0.0)
        hi = torch.clamp(hi, min=0.0)
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        scale = torch.clamp(scale, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale, zero_point


@torch.no_grad()
def official_fake_quantize(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int,
                           ch_axis: int | None = None, with_mask: bool = False):
    """The official ZAQ code's asymmetric quantizer, value only (no gradient).

    With n = 2^b - 1 levels per unit range: s = n / max(hi - lo, 1e-8), z = round(s lo) + 2^(b-1),
    q = clamp(round(s x - z), -2^(b-1), 2^(b-1) - 1), and the value is (q + z) / s. It rounds
    *after* subtracting the (integer) zero point, so exact half-steps round to the even q, not to
    the even s x; and s is levels per unit (a division), not torch's step size (a multiplication),
    so values can differ from the fused operator by an ulp. ``lo``/``hi``: scalars, or one per
    slice along ``ch_axis``. ``with_mask``: also return where round(s x - z) was on the grid
    (before clamping), for a clipped estimator.
    """
    if ch_axis is not None:
        shape = [1] * x.dim()
        shape[ch_axis] = -1
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    half = 2 ** (bits - 1)
    s = (2**bits - 1) / torch.clamp(hi - lo, min=OFFICIAL_MIN_RANGE)
    z = torch.round(s * lo) + half
    unclamped = torch.round(s * x - z)
    q = torch.clamp(unclamped, -half, half - 1)
    if with_mask:
        return (q + z) / s, unclamped == q
    return (q + z) / s


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized value ``xq``; backward: ``x``'s gradient unchanged, or times
    ``mask`` (1 inside the representable range, 0 outside: the clipped estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, xq: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(mask if mask is not None else torch.empty(0))
        ctx.masked = mask is not None
        return xq

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return (grad * mask if ctx.masked else grad), None, None


class UncalibratedError(RuntimeError):
    """An activation quantizer was used before any calibration batch set its range."""


class FakeQuantizer(nn.Module):
    """Fake-quantizes a tensor to ``bits`` bits.

    Args:
        bits: 2-8, or 16/32 for identity.
        symmetric: signed grid centred on 0 (True) or affine grid with a zero point.
        per_channel: one range per slice along ``ch_axis`` (weights) or one per tensor.
        range_rule: ``current`` recomputes min/max from every input (weights);
            ``minmax`` keeps a running min/max that only widens (activations, as in the
            official ZAQ code); ``ema`` an exponential moving average of batch min/max;
            ``percentile`` and ``mse`` the mean over batches of each batch's 0.01/99.99 %
            quantiles, or of the clipping range that minimises its quantization error
            (the stronger post-training baselines: a few outliers no longer stretch the grid).
        momentum: EMA weight of the newest batch.
        include_zero: widen the range to contain 0 (default); False keeps a channel's own
            [min, max] (the official code's weights).
        rounding: ``before-zero-point`` (torch's fused operators) or ``after-zero-point``
            (:func:`official_fake_quantize`; asymmetric only).
        ste: ``clipped`` (no gradient outside the range) or ``identity`` (the official code's).

    The running range is a non-persistent buffer, so quantizing a model does not change
    its ``state_dict`` keys; :func:`zaqbench.quant.quantizer_state` saves it separately.
    """

    def __init__(
        self,
        bits: int,
        symmetric: bool,
        per_channel: bool = False,
        ch_axis: int = 0,
        range_rule: str = "minmax",
        momentum: float = 0.1,
        include_zero: bool = True,
        rounding: str = "before-zero-point",
        ste: str = "clipped",
    ) -> None:
        super().__init__()
        if range_rule not in RANGE_RULES:
            raise ValueError(f"range_rule must be one of {RANGE_RULES}, got {range_rule!r}")
        if rounding not in ROUNDINGS or ste not in STES:
            raise ValueError(f"rounding must be one of {ROUNDINGS} and ste one of {STES}, got {rounding!r}, {ste!r}")
        if rounding == "after-zero-point" and symmetric:
            raise ValueError("rounding='after-zero-point' is the official asymmetric quantizer; use symmetric=False")
        if not include_zero and rounding != "after-zero-point":
            raise ValueError("include_zero=False needs rounding='after-zero-point': torch's fused operators "
                             "need the zero point on the integer grid, i.e. 0 in the range")
        if per_channel and range_rule != "current":
            raise ValueError("per-channel ranges are only supported with range_rule='current'")
        self.bits = check_bits(bits)
        self.symmetric = symmetric
        self.per_channel = per_channel
        self.ch_axis = ch_axis
        self.range_rule = range_rule
        self.momentum = momentum
        self.include_zero = include_zero
        self.rounding = rounding
        self.ste = ste
        self.enabled = True
        self.observing = False
        self.register_buffer("min_val", torch.tensor(float("inf")), persistent=False)
        self.register_buffer("max_val", torch.tensor(float("-inf")), persistent=False)
        self.batches_seen = 0  # 'percentile'/'mse': the running mean's count

    @property
    def active(self) -> bool:
        return self.enabled and self.bits not in FULL_PRECISION_BITS

    @property
    def has_range(self) -> bool:
        return bool(torch.isfinite(self.min_val)) and bool(torch.isfinite(self.max_val))

    def reset_range(self) -> None:
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self.batches_seen = 0

    def batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The range one batch asks for under this quantizer's rule."""
        flat = x.detach().reshape(-1).float()
        if self.range_rule == "percentile":
            n = flat.numel()
            k_hi = max(1, min(n, round(n * PERCENTILE / 100)))
            return flat.kthvalue(max(1, n - k_hi + 1)).values, flat.kthvalue(k_hi).values
        lo, hi = torch.aminmax(flat)
        if self.range_rule == "mse":
            return self._mse_range(flat[::max(1, flat.numel() // MSE_SAMPLE)], lo, hi)
        return lo, hi

    def _mse_range(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clipping range [a lo, b hi], a and b in (0, 1], whose grid quantizes ``x`` with the
        least squared error: the upper end with the lower fixed, then the lower with the upper
        fixed, twice (the ends matter almost separately: an outlier on one side must not shrink
        the other, as one shared factor would)."""
        qmin, qmax = quant_range(self.bits, self.symmetric)
        # even steps down to 1/50 of the observed end, then log steps to 1/1000 (a lone outlier can
        # stretch a range far beyond the bulk of the values)
        factors = torch.logspace(-3, -math.log10(MSE_CANDIDATES), 10)[:-1].tolist() + \
            torch.linspace(1.0 / MSE_CANDIDATES, 1.0, MSE_CANDIDATES).tolist()

        def error(a: torch.Tensor, b: torch.Tensor) -> float:
            scale, zero_point = affine_qparams(a, b, self.bits, self.symmetric, self.include_zero)
            return float((torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax) - x).square().sum())

        if self.symmetric:  # one bound serves both ends
            bound = torch.maximum(-lo, hi)
            best = min((bound * f for f in factors), key=lambda b: error(-b, b))
            return -best, best
        best_lo, best_hi = lo, hi
        for _ in range(2):
            best_hi = min((hi * f for f in factors), key=lambda b: error(best_lo, b))
            best_lo = min((lo * f for f in factors), key=lambda a: error(a, best_hi))
        return best_lo, best_hi

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = self.batch_range(x)
        if self.observing:
            # calibration under torchrun: each rank holds some rows of the batch; the range is the
            # whole batch's before it quantizes this layer's input, so the next layers see what
            # one process would (a collective: every rank calibrates on the same batches' rows)
            distributed.reduce_min_max(lo, hi)
        if self.range_rule in AVERAGED_RULES:
            self.batches_seen += 1
            weight = 1.0 / self.batches_seen
            self.min_val.copy_(lo if self.batches_seen == 1 else self.min_val.lerp(lo, weight))
            self.max_val.copy_(hi if self.batches_seen == 1 else self.max_val.lerp(hi, weight))
        elif not self.has_range:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        elif self.range_rule == "ema":
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)
        else:
            torch.minimum(self.min_val, lo, out=self.min_val)
            torch.maximum(self.max_val, hi, out=self.max_val)

    def current_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.detach().transpose(0, self.ch_axis).reshape(x.shape[self.ch_axis], -1)
        if self.per_channel:
            return torch.aminmax(flat, dim=1)
        return torch.aminmax(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.range_rule == "current":
            lo, hi = self.current_range(x)
        else:
            if self.observing:
                self.observe(x)
            elif not self.has_range:
                # Observing here would take the range from whatever data comes first (the test
                # split during evaluation) and mislabel the row's calibration source.
                raise UncalibratedError("an activation quantizer has no calibrated range; calibrate the "
                                        "model (calibrate_activations) on at least one batch first")
            lo, hi = self.min_val, self.max_val
        if self.rounding == "after-zero-point" or self.ste == "identity":
            return self._quantize_unfused(x, lo, hi)
        scale, zero_point = affine_qparams(lo, hi, self.bits, self.symmetric, self.include_zero)
        qmin, qmax = quant_range(self.bits, self.symmetric)
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, scale, zero_point, self.ch_axis, qmin, qmax
            )
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)

    def _quantize_unfused(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The value of either rounding, with either straight-through estimator (the fused
        path covers torch's rounding with the clipped estimator)."""
        ch_axis = self.ch_axis if self.per_channel else None
        with torch.no_grad():
            mask = None
            if self.rounding == "after-zero-point":
                if self.include_zero:
                    lo, hi = torch.clamp(lo.float(), max=0.0), torch.clamp(hi.float(), min=0.0)
                xq, inside = official_fake_quantize(x, lo, hi, self.bits, ch_axis, with_mask=True)
                mask = inside.to(x.dtype) if self.ste == "clipped" else None
            else:
                scale, zero_point = affine_qparams(lo, hi, self.bits, self.symmetric, self.include_zero)
                qmin, qmax = quant_range(self.bits, self.symmetric)
                xq = torch.fake_quantize_per_channel_affine(x, scale, zero_point, ch_axis, qmin, qmax) \
                    if self.per_channel else torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
        return _StraightThrough.apply(x, xq, mask)

    def extra_repr(self) -> str:
        kind = "per-channel" if self.per_channel else "per-tensor"
        sym = "symmetric" if self.symmetric else "asymmetric"
        extra = "".join(f", {k}={v}" for k, v, d in (("include_zero", self.include_zero, True),
                        ("rounding", self.rounding, "before-zero-point"), ("ste", self.ste, "clipped")) if v != d)
        return f"bits={self.bits}, {kind}, {sym}, range={self.range_rule}{extra}"
