"""Quantization configuration, presets, and the protocol record of a run.

A result is only comparable to another if the quantization protocol matches:
data-free papers disagree by 20-40 points for that reason alone. ``QConfig``
holds every choice; :meth:`QConfig.protocol` turns it into the columns each
result row carries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import UserError
from .fake_quant import FULL_PRECISION_BITS, RANGE_RULES, ROUNDINGS, STES, check_bits

A_PLACEMENTS = ("layer-input", "after-relu")
W_RANGES = ("include-zero", "minmax")
# Fields added after result rows existed. At their default they are left out of ``to_dict()``
# (hashed into every row's config_hash) and of the row's settings, so rows and hashes of
# configs that do not set them stay exactly what they were.
LATER_FIELDS = ("a_placement", "ste", "w_range", "rounding")


@dataclass(frozen=True)
class QConfig:
    wbits: int = 4
    abits: int = 4
    w_granularity: str = "channel"  # 'channel' | 'tensor'
    w_symmetric: bool = True
    a_symmetric: bool = False
    a_range: str = "minmax"  # 'minmax' (running, only widens) | 'ema' | 'percentile' | 'mse'
    a_momentum: float = 0.1
    first_fp: bool = True  # keep the first quantizable layer in full precision
    last_fp: bool = True  # keep the last quantizable layer in full precision
    fp_layers: tuple[str, ...] = field(default_factory=tuple)  # fnmatch patterns
    bn_fold: bool = False
    # The official ZAQ code's quantizer (README "The official code, reproduced"):
    a_placement: str = "layer-input"  # 'layer-input' (each quantized layer's input) | 'after-relu'
    ste: str = "clipped"  # 'clipped' (no gradient outside the range) | 'identity' (unchanged everywhere)
    w_range: str = "include-zero"  # weight range widened to contain 0 | 'minmax' (each channel's own)
    rounding: str = "before-zero-point"  # torch's fused operators | 'after-zero-point' (official arithmetic)

    def __post_init__(self) -> None:
        for name in ("wbits", "abits"):
            try:
                check_bits(getattr(self, name), name)
            except ValueError as err:
                raise UserError(str(err)) from None
        if self.w_granularity not in ("channel", "tensor"):
            raise UserError(f"w_granularity must be 'channel' or 'tensor', got {self.w_granularity!r}")
        if self.a_range not in RANGE_RULES[1:]:
            raise UserError(f"a_range must be one of {', '.join(RANGE_RULES[1:])}, got {self.a_range!r}")
        for name, valid in (("a_placement", A_PLACEMENTS), ("ste", STES), ("w_range", W_RANGES),
                            ("rounding", ROUNDINGS)):
            if getattr(self, name) not in valid:
                raise UserError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.rounding == "after-zero-point" and (self.w_symmetric or self.a_symmetric):
            raise UserError("rounding='after-zero-point' is the official asymmetric quantizer; "
                            "set w_symmetric=False and a_symmetric=False with it")
        if self.w_range == "minmax" and self.rounding != "after-zero-point":
            # torch's fused operators need the zero point on the integer grid, i.e. 0 in the range
            raise UserError("w_range='minmax' needs rounding='after-zero-point' (torch's fused quantizer "
                            "requires the range to contain 0)")
        object.__setattr__(self, "fp_layers", tuple(self.fp_layers))

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None = None, **overrides: Any) -> "QConfig":
        """Build from a config dict, starting from ``preset`` if the dict names one."""
        cfg = dict(cfg or {})
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        preset = cfg.pop("preset", "default")
        if preset not in PRESETS:
            raise UserError(f"unknown quantization preset '{preset}'; valid presets: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UserError(f"unknown quant option(s) {unknown}; valid options: {sorted(known)}")
        return replace(PRESETS[preset], **cfg)

    def with_bits(self, wbits: int, abits: int) -> "QConfig":
        return replace(self, wbits=wbits, abits=abits)

    @property
    def is_full_precision(self) -> bool:
        return self.wbits in FULL_PRECISION_BITS and self.abits in FULL_PRECISION_BITS

    def fp_policy(self) -> str:
        parts = [p for p, on in (("first", self.first_fp), ("last", self.last_fp)) if on]
        parts += list(self.fp_layers)
        return "+".join(parts) if parts else "none"

    def protocol(self, calib_data: str) -> dict[str, Any]:
        """The quantization protocol columns of a result row."""
        return {
            "w_granularity": f"per-{self.w_granularity}",
            "w_symmetric": self.w_symmetric,
            "a_symmetric": self.a_symmetric,
            "a_range": self.a_range,
            "first_last_fp": self.fp_policy(),
            "bn_folded": self.bn_fold,
            "calib_data": calib_data,
        }

    def later_options(self) -> dict[str, Any]:
        """The fields of ``LATER_FIELDS`` that differ from their defaults (recorded in the row's
        settings as ``cfg.quant.<field>``, since the protocol columns predate them)."""
        return {name: getattr(self, name) for name in LATER_FIELDS if getattr(self, name) != _DEFAULTS[name]}

    def to_dict(self) -> dict[str, Any]:
        """All fields, except ``LATER_FIELDS`` at their defaults (see there)."""
        d = asdict(self)
        d["fp_layers"] = list(self.fp_layers)
        for name in LATER_FIELDS:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        return d


_DEFAULTS = {f.name: f.default for f in fields(QConfig) if f.name in LATER_FIELDS}


PRESETS: dict[str, QConfig] = {
    # The suite's default: symmetric per-channel weights, affine per-tensor
    # activations with running min/max, first and last layer in full precision.
    "default": QConfig(),
    # Faithful to the official ZAQ code's quantizer: per-channel asymmetric weights on each
    # channel's own [min, max] recomputed every step, per-tensor asymmetric activations after
    # each ReLU module whose range only widens, the official rounding arithmetic, gradients
    # passed unchanged through every quantizer, first and last layers quantized, BN not folded.
    "zaq-code": QConfig(
        w_granularity="channel", w_symmetric=False, a_symmetric=False, a_range="minmax",
        first_fp=False, last_fp=False, bn_fold=False,
        a_placement="after-relu", ste="identity", w_range="minmax", rounding="after-zero-point",
    ),
}
