"""Bit-width rules (``methods.<zaq>.wbits_rules``): resolved per job, hashed as the options they set."""
import re
import shlex
from pathlib import Path

import pytest
from mmengine.config import Config

import tasks  # noqa: F401 - registers the adapters
import zaqbench.methods  # noqa: F401 - registers the methods
from zaqbench.zaq.bit_rules import options_at
from zaqbench.errors import UserError
from zaqbench.registry import build_method
from zaqbench.run.runner import main

from tests.run.test_runner import ROOT, TINY, env, expect_error, rows  # noqa: F401 - env: the runner's fixture

PA = {"q_prox_weight": 1e-3, "q_anchor_fraction": 0.5}
RECIPE = dict(Config.fromfile(str(ROOT / "configs" / "cls" / "resnet20.py")).methods.zaq)


def test_options_at_merges_rules_from_their_bit_width_up():
    rules = [dict(min_wbits=8, beta=0.5), dict(min_wbits=6, beta=0.2, alpha=2.0)]
    assert options_at(rules, 4) == {}
    assert options_at(rules, 6) == {"beta": 0.2, "alpha": 2.0}
    assert options_at(rules, 8) == {"beta": 0.5, "alpha": 2.0}  # the higher rule wins


def test_the_recipe_is_p_plus_a_from_six_bits_and_plain_below():
    recipe = build_method("zaq", **RECIPE)
    without = {k: v for k, v in RECIPE.items() if k != "wbits_rules"}
    for bits in (8, 6):
        resolved = recipe.for_bits(bits, bits)
        assert "wbits_rules" not in resolved.cfg
        assert resolved.cfg == build_method("zaq", **without, **PA).cfg  # so the same config hash
        assert {k: resolved.settings()[k] for k in PA} == PA  # and the row records what ran
        assert resolved.zaq_config().q_anchor_fraction == 0.5
    plain = recipe.for_bits(4, 4)
    assert plain.cfg == build_method("zaq", **without).cfg
    assert plain.zaq_config().q_prox_weight == 0 and "q_prox_weight" not in plain.cfg
    # the ablations and DFQ-then-ZAQ take the rule too, and keep their own overrides
    assert build_method("zaq-no-feat", **RECIPE).for_bits(8, 8).zaq_config().alpha == 0
    assert build_method("zaq-no-feat", **RECIPE).for_bits(8, 8).zaq_config().q_prox_weight == 1e-3
    assert build_method("dfq+zaq", **RECIPE).for_bits(6, 6).zaq_config().q_anchor_fraction == 0.5


@pytest.mark.parametrize("rules, needle", [
    (dict(min_wbits=6), "use a list of dicts"),
    ([dict(q_prox_weight=1e-3)], "needs min_wbits"),
    ([dict(min_wbits=0, q_prox_weight=1e-3)], "needs min_wbits"),
    ([dict(min_wbits=6, q_prox=1e-3)], "unknown option(s) ['q_prox']"),
    ([dict(min_wbits=6, beta=1.0), dict(min_wbits=6, alpha=1.0)], "same min_wbits"),
    ([dict(min_wbits=6, q_anchor_fraction=1.5)], "q_anchor_fraction=1.5 is not valid"),
    ([dict(min_wbits=6, wbits_rules=[])], "unknown option(s) ['wbits_rules']"),
])
def test_malformed_rules_fail_when_the_method_is_built(rules, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        build_method("zaq", wbits_rules=rules)


def test_an_option_the_rule_would_overrule_is_an_error_unless_equal():
    with pytest.raises(UserError, match=r"q_prox_weight=0 contradicts methods.zaq.wbits_rules.*wbits_rules=\[\]"):
        build_method("zaq", **{**RECIPE, "q_prox_weight": 0})
    build_method("zaq", **{**RECIPE, **PA})  # the same values: no contradiction


def plan_hashes(env, capsys, *options):
    """method/bits -> config hash, as ``--dry-run`` lists the jobs."""
    capsys.readouterr()
    assert main(["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(env["out"]),
                 "--work-dir", env["work"], "--no-progress", "--methods", "zaq", "--bits", "8,6,4", "--dry-run",
                 "--cfg-options", *TINY, *options]) == 0
    jobs = re.findall(r"(\S+)\s+W(\d)A\d seed 0\s+\[(\w+)\]", capsys.readouterr().out)
    return {f"{m}-w{w}": h for m, w, h in jobs}


def test_jobs_hash_as_the_options_they_run_with(env, capsys):
    recipe = plan_hashes(env, capsys)
    direct = plan_hashes(env, capsys, "methods.zaq.wbits_rules=[]", "methods.zaq.q_prox_weight=1e-3",
                         "methods.zaq.q_anchor_fraction=0.5")
    plain = plan_hashes(env, capsys, "methods.zaq.wbits_rules=[]")
    assert len(recipe) == 3
    assert recipe["zaq-w8"] == direct["zaq-w8"] and recipe["zaq-w6"] == direct["zaq-w6"]
    assert recipe["zaq-w4"] == plain["zaq-w4"] != direct["zaq-w4"]
    assert recipe["zaq-w8"] != plain["zaq-w8"]
    assert rows(env["out"]) == []


def test_bad_rules_on_the_command_line(env, capsys):
    code = main(["--task", "cls", "--model", "resnet20", "--data-root", env["root"], "--out", str(env["out"]),
                 "--work-dir", env["work"], "--no-progress", "--methods", "zaq",
                 "--cfg-options", *TINY, "methods.zaq.wbits_rules=[{'min_wbits': 6, 'q_anchor_fraction': 2}]"])
    expect_error(capsys, code, "methods.zaq.q_anchor_fraction=2 is not valid", "[0, 1)")
    assert rows(env["out"]) == [] and not Path(env["work"]).exists()


def test_the_suggested_rules_can_be_typed_as_the_message_shows(env, capsys, tmp_path):
    with pytest.raises(UserError) as info:
        build_method("zaq", wbits_rules="[dict(min_wbits=6, q_prox_weight=1e-3)]")  # a call, not a literal
    message = str(info.value)
    typed = shlex.split(re.search(r'--cfg-options (".*?")', message).group(1))  # what the shell passes on
    assert len(plan_hashes(env, capsys, *typed)) == 3  # --cfg-options takes it: three jobs planned
    in_file = re.search(r"in a config file: (wbits_rules=\[dict\(.*?\)\])", message).group(1)
    (tmp_path / "rules.py").write_text(in_file + "\n")
    build_method("zaq", **{**RECIPE, "wbits_rules": Config.fromfile(str(tmp_path / "rules.py")).wbits_rules})
    none = re.search(r"or (\S+=\[\]) for none", message).group(1)
    assert len(plan_hashes(env, capsys, none)) == 3
