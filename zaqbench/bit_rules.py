"""Method options that depend on the weight bit width (``wbits_rules``).

A rule is a dict ``dict(min_wbits=6, q_prox_weight=1e-3, ...)``: from that weight bit width up,
its options replace the method's. Rules apply in order of ``min_wbits``, so a higher rule wins
where two set the same option. Why: the stabilisers that keep Q near P at fine grids (8, 6 bits)
cost accuracy at 4 bits, where Q has to move further from P (README, "A ZAQ that holds up").

Rules are resolved when the jobs are planned (``Method.for_bits``): each job's method holds the
options it runs with and no rules, so a job's config hash equals that of a run which set the same
options directly.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from .errors import UserError

WBITS_RULES = "wbits_rules"
MAX_BITS = 32


def check_wbits_rules(rules: Any, explicit: Mapping[str, Any], method: str,
                      known: set[str]) -> list[Mapping[str, Any]]:
    """``rules`` as a list sorted by ``min_wbits``; one clear line on anything malformed.

    ``explicit`` is the method's config section as given: an option set there to a value a rule
    changes is an error, since the rule would silently overrule it at some bit widths.
    """
    option = f"methods.{method}.{WBITS_RULES}"
    example = "e.g. [dict(min_wbits=6, q_prox_weight=1e-3)], or [] for none"
    if not isinstance(rules, (list, tuple)) or not all(isinstance(rule, Mapping) for rule in rules):
        raise UserError(f"{option}={rules!r} is not valid; use a list of dicts, {example}")
    for rule in rules:
        bits = rule.get("min_wbits")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise UserError(f"{option}: rule {dict(rule)!r} needs min_wbits, an integer in [1, {MAX_BITS}]; {example}")
        unknown = sorted(set(rule) - {"min_wbits"} - known)
        if unknown:
            raise UserError(f"{option}: rule {dict(rule)!r} sets unknown option(s) {unknown}; "
                            f"valid options: {sorted(known)}")
        for key, value in rule.items():
            if key != "min_wbits" and key in explicit and explicit[key] != value:
                raise UserError(f"methods.{method}.{key}={explicit[key]!r} contradicts {option}, which sets it to "
                                f"{value!r} from W{bits} up; change the rule, or set {option}=[] and give the "
                                f"options yourself")
    by_bits = sorted(rules, key=lambda rule: rule["min_wbits"])
    if len({rule["min_wbits"] for rule in by_bits}) < len(by_bits):
        raise UserError(f"{option}: two rules have the same min_wbits; merge them into one")
    return by_bits


def options_at(rules: Sequence[Mapping[str, Any]], wbits: int) -> dict[str, Any]:
    """The options the rules set at weight bit width ``wbits`` (empty below every rule)."""
    options: dict[str, Any] = {}
    for rule in sorted(rules, key=lambda rule: rule["min_wbits"]):
        if wbits >= rule["min_wbits"]:
            options.update({key: value for key, value in rule.items() if key != "min_wbits"})
    return options


def cumulative_rule_options(rules: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The options at each rule's ``min_wbits``: every combination a job can run with."""
    for rule in rules:
        yield options_at(rules, rule["min_wbits"])
