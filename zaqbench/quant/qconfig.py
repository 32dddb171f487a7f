"""Quantization configuration, presets, and the protocol record of a run.

A result is only comparable to another if the quantization protocol matches:
data-free papers disagree by 20-40 points for that reason alone. ``QConfig``
holds every choice; :meth:`QConfig.protocol` turns it into the columns each
result row carries.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..errors import UserError
from ..options import (Options, OptionError, Rule, boolean, check_keys, hashed_fields, is_number, newer_fields,
                       one_of, option, sequence_of)
from .fake_quant import FULL_PRECISION_BITS, RANGE_RULES, ROUNDINGS, STES

A_PLACEMENTS = ("layer-input", "after-relu")
W_RANGES = ("include-zero", "minmax")

bit_width = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool)
                 and (2 <= v <= 8 or v in FULL_PRECISION_BITS), "2-8, or 16/32 for full precision")


@dataclass(frozen=True)
class QConfig(Options):
    """Every choice of the quantization protocol (the config's ``quant`` section)."""

    section: ClassVar[str] = "quant"

    wbits: int = option(4, bit_width, help="weight bits")
    abits: int = option(4, bit_width, help="activation bits")
    w_granularity: str = option("channel", one_of("channel", "tensor"),
                                help="weight ranges per output channel or tensor")
    w_symmetric: bool = option(True, boolean, help="symmetric weight grid")
    a_symmetric: bool = option(False, boolean, help="symmetric activation grid")
    a_range: str = option("minmax", one_of(*RANGE_RULES[1:]),
                          help="activation range rule: 'minmax' (running, only widens), 'ema', 'percentile', 'mse'")
    a_momentum: float = option(0.1, Rule(lambda v: is_number(v) and 0 < v <= 1, "a momentum in (0, 1]"),
                               help="momentum of the 'ema' range rule")
    first_fp: bool = option(True, boolean, help="keep the first quantizable layer in full precision")
    last_fp: bool = option(True, boolean, help="keep the last quantizable layer in full precision")
    fp_layers: tuple[str, ...] = option((), sequence_of(lambda x: isinstance(x, str), "a list of fnmatch patterns"),
                                        help="layers kept in full precision, as fnmatch patterns of module names")
    bn_fold: bool = option(False, boolean, help="fold BatchNorm into the preceding convolution")
    # The official ZAQ code's quantizer (README "The official code, reproduced"):
    a_placement: str = option("layer-input", one_of(*A_PLACEMENTS), since=2,
                              help="'layer-input' (each quantized layer's input) | 'after-relu'")
    ste: str = option("clipped", one_of(*STES), since=2,
                      help="'clipped' (no gradient outside the range) | 'identity' (unchanged everywhere)")
    w_range: str = option("include-zero", one_of(*W_RANGES), since=2,
                          help="weight range widened to contain 0 | 'minmax' (each channel's own)")
    rounding: str = option("before-zero-point", one_of(*ROUNDINGS), since=2,
                           help="torch's fused operators | 'after-zero-point' (the official arithmetic)")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "fp_layers", tuple(self.fp_layers))  # hashable, like every other field

    def check_combination(self) -> None:
        if self.rounding == "after-zero-point" and (self.w_symmetric or self.a_symmetric):
            raise OptionError("{section}.rounding='after-zero-point' is the official asymmetric quantizer; "
                              "set {section}.w_symmetric=False and {section}.a_symmetric=False with it")
        if self.w_range == "minmax" and self.rounding != "after-zero-point":
            # torch's fused operators need the zero point on the integer grid, i.e. 0 in the range
            raise OptionError("{section}.w_range='minmax' needs {section}.rounding='after-zero-point' (torch's "
                              "fused quantizer requires the range to contain 0)")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None = None, **overrides: Any) -> "QConfig":
        """Build from a config dict, starting from ``preset`` if the dict names one."""
        cfg = dict(cfg or {})
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        preset = cfg.pop("preset", "default")
        if preset not in PRESETS:
            raise UserError(f"unknown quantization preset '{preset}'; valid presets: {', '.join(PRESETS)}")
        check_keys(cls, cfg)
        return replace(PRESETS[preset], **cfg)  # checked as it is built

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

    def extra_settings(self) -> dict[str, Any]:
        """The set fields of config versions after 1, which the protocol columns do not show
        (recorded in the row's settings as ``cfg.quant.<field>``)."""
        return newer_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """What enters the config hash (:func:`zaqbench.options.hashed_fields`)."""
        d = hashed_fields(self)
        d["fp_layers"] = list(self.fp_layers)
        return d


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
