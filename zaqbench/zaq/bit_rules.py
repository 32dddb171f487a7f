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

from ..options import OptionError, sequence_of

WBITS_RULES = "wbits_rules"
MAX_BITS = 32
# what can be typed: --cfg-options reads a Python literal (dicts in braces), a config file is Python
EXAMPLE = ("e.g. --cfg-options \"{section}.wbits_rules=[{'min_wbits': 6, 'q_prox_weight': 1e-3}]\" (in a config "
           "file: wbits_rules=[dict(min_wbits=6, q_prox_weight=1e-3)]), or {section}.wbits_rules=[] for none")
#: the field rule of ``wbits_rules``; :func:`check_wbits_rules` checks each rule's content
rule_list = sequence_of(lambda rule: isinstance(rule, Mapping), f"a list of dicts, {EXAMPLE}")


def check_wbits_rules(rules: Sequence[Mapping[str, Any]], known: set[str]) -> list[Mapping[str, Any]]:
    """``rules`` (a list of dicts) sorted by ``min_wbits``; one clear line on anything malformed
    (an :class:`~zaqbench.options.OptionError`, ``{section}`` standing for the method's section)."""
    option = "{section}." + WBITS_RULES
    for rule in rules:
        bits = rule.get("min_wbits")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise OptionError(f"{option}: rule {dict(rule)!r} needs min_wbits, an integer in [1, {MAX_BITS}]; "
                              f"{EXAMPLE}")
        unknown = sorted(set(rule) - {"min_wbits"} - known)
        if unknown:
            raise OptionError(f"{option}: rule {dict(rule)!r} sets unknown option(s) {unknown}; "
                              f"valid options: {sorted(known)}")
    by_bits = sorted(rules, key=lambda rule: rule["min_wbits"])
    if len({rule["min_wbits"] for rule in by_bits}) < len(by_bits):
        raise OptionError(f"{option}: two rules have the same min_wbits; merge them into one")
    return by_bits


def check_contradictions(rules: Sequence[Mapping[str, Any]], explicit: Mapping[str, Any], section: str) -> None:
    """``explicit`` is the method's config section as given: an option set there to a value a rule
    changes is an error, since the rule would silently overrule it at some bit widths."""
    option = f"{section}.{WBITS_RULES}"
    for rule in rules:
        for key, value in rule.items():
            if key != "min_wbits" and key in explicit and explicit[key] != value:
                raise OptionError(f"{section}.{key}={explicit[key]!r} contradicts {option}, which sets it to "
                                  f"{value!r} from W{rule['min_wbits']} up; change the rule, or set {option}=[] and "
                                  "give the options yourself")


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
