"""The option model: fields that declare their rule, one check, one hashing rule with a version."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import pytest

import zaqbench.methods  # noqa: F401 - registers the methods
from zaqbench.adapter import EvalOptions, TeacherOptions, hashed_task
from zaqbench.errors import UserError
from zaqbench.options import (CONFIG_VERSION, Options, OptionError, boolean, build_options, check_entries,
                              hashed_entries, hashed_fields, newer_fields, one_of, option, positive_int,
                              recorded_fields, redefault, sequence_of)
from zaqbench.quant import QConfig
from zaqbench.registry import METHODS, build_method, method_class


@dataclass
class Demo(Options):
    section: ClassVar[str] = "methods.demo"

    size: int = option(8, positive_int, help="a size")
    flag: bool = option(True, boolean, recorded=False, help="a switch")
    mode: str = option("a", one_of("a", "b") | one_of("", text="'' for the config's own"), since=2, help="a mode")
    items: tuple[int, ...] = option((), sequence_of(lambda x: isinstance(x, int), "a list of integers"), since=2)
    threads: int | None = option(None, positive_int | one_of(None, text="None for any"), hashed=False)

    def check_combination(self) -> None:
        if self.mode == "b" and not self.flag:
            raise OptionError("{section}.mode='b' needs {section}.flag=True")


@dataclass
class DemoB(Demo):
    section: ClassVar[str] = "methods.demo-b"

    mode: str = redefault(Demo, "mode", "b")


@pytest.mark.parametrize("values, line", [
    (dict(size=0), "methods.demo.size=0 is not valid; use a positive integer"),
    (dict(size=2.0), "methods.demo.size=2.0 is not valid; use a positive integer"),
    (dict(flag=1), "methods.demo.flag=1 is not valid; use True or False"),
    (dict(mode="c"), "methods.demo.mode='c' is not valid; use 'a', 'b', or '' for the config's own"),
    (dict(items=3), "methods.demo.items=3 is not valid; use a list of integers"),
    (dict(threads=0), "methods.demo.threads=0 is not valid; use a positive integer, or None for any"),
    (dict(mode="b", flag=False), "methods.demo.mode='b' needs methods.demo.flag=True"),
    (dict(sise=3), "unknown option(s) ['sise'] in methods.demo; valid options: "
                   "['flag', 'items', 'mode', 'size', 'threads']"),
])
def test_a_bad_value_is_one_line_naming_the_key_the_value_and_what_is_allowed(values, line):
    with pytest.raises(UserError) as err:
        build_options(Demo, values)
    assert str(err.value) == line


def test_the_check_names_the_section_the_options_came_from():
    with pytest.raises(UserError, match=r"^methods\.other\.size=0 is not valid"):
        build_options(Demo, dict(size=0), "methods.other")
    with pytest.raises(UserError, match=r"^methods\.other\.mode='b' needs methods\.other\.flag=True$"):
        build_options(Demo, dict(mode="b", flag=False), "methods.other")
    with pytest.raises(UserError, match=r"^methods\.demo\.size=-1"):
        Demo(size=-1)  # built directly: checked too
    assert not one_of(1)(True) and not one_of(0.0)(False)  # a bool is not a number here


def test_version_one_fields_are_always_hashed_later_ones_only_when_set_and_unhashed_ones_never():
    assert hashed_fields(Demo()) == {"size": 8, "flag": True}
    assert hashed_fields(Demo(mode="", items=[1], threads=4)) == {"size": 8, "flag": True, "mode": "", "items": [1]}
    assert hashed_fields(Demo(items=[])) == hashed_fields(Demo())  # a list equals the tuple default
    assert newer_fields(Demo(mode="")) == {"mode": ""}
    assert recorded_fields(Demo()) == {"size": 8}  # flag: recorded=False


def test_a_changed_default_is_hashed_against_the_default_the_field_was_introduced_with():
    assert DemoB().mode == "b" and hashed_fields(DemoB())["mode"] == "b"
    assert "mode" not in hashed_fields(DemoB(mode="a"))
    assert build_method("zaq-official").cfg["act_ranges"] == "every-forward"
    assert "relation_guard" not in build_method("zaq-official", relation_guard="clamp").cfg


def test_option_declarations_are_checked_when_written():
    with pytest.raises(ValueError, match="config versions"):
        option(1, since=CONFIG_VERSION + 1)
    with pytest.raises(TypeError, match="immutable"):
        option([1, 2])


SECTIONS = [QConfig, TeacherOptions, EvalOptions, *sorted({method_class(n).Options for n in METHODS.module_dict},
                                                           key=lambda c: c.__name__)]


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_section_declares_each_field_with_a_version_and_its_defaults_pass(cls):
    for f in fields(cls):
        assert {"rule", "since", "hashed", "recorded", "help"} <= set(f.metadata), f.name
        assert 1 <= f.metadata["since"] <= CONFIG_VERSION
    cls()  # the defaults pass their own rules


def test_raw_task_sections_follow_the_same_rule():
    task = dict(type="cls", teacher=dict(epochs=6, threads=2), eval=dict(batch_size=10), model=dict(width=4))
    assert hashed_task(task) == dict(type="cls", teacher=dict(epochs=6), eval=dict(batch_size=10), model=dict(width=4))
    assert hashed_entries(dict(epochs=1, threads=None), TeacherOptions) == {"epochs": 1}
    assert check_entries(dict(threads=3, epochs=1), TeacherOptions).threads == 3  # undeclared keys: the adapter's
    with pytest.raises(UserError, match=r"^task\.eval\.max_samples=0 is not valid; use a positive integer, or None"):
        check_entries(dict(max_samples=0), EvalOptions)
    with pytest.raises(UserError, match=r"^task\.teacher=5 must be a dict"):
        check_entries(5, TeacherOptions)


def test_quant_options_are_checked_under_quant():
    with pytest.raises(UserError, match=r"^quant\.a_momentum=0 is not valid; use a momentum in \(0, 1\]$"):
        QConfig.from_dict({"a_momentum": 0})
    with pytest.raises(UserError, match=r"^quant\.fp_layers='fc' is not valid; use a list of fnmatch patterns$"):
        QConfig.from_dict({"fp_layers": "fc"})
    with pytest.raises(UserError, match=r"^quant\.rounding='after-zero-point' is the official asymmetric"):
        QConfig.from_dict({"rounding": "after-zero-point"})
    QConfig.from_dict({"preset": "zaq-code", "rounding": "after-zero-point"})  # the preset's other fields fit


def test_a_method_option_is_named_under_the_method_that_was_given_it():
    with pytest.raises(UserError, match=r"^methods\.dfq\+zaq\.iters=0 is not valid; use a positive integer$"):
        build_method("dfq+zaq", iters=0)
    with pytest.raises(UserError, match=r"^methods\.zaq-no-feat\.q_trust_steps=1\.0 works on the quantized weights "
                                        r"only; set methods\.zaq-no-feat\.q_params='quantized-weights' with it$"):
        build_method("zaq-no-feat", q_trust_steps=1.0)
    with pytest.raises(UserError, match=r"^methods\.real-ptq\.calib_batches=0 is not valid"):
        build_method("real-ptq", calib_batches=0)


def test_gdfq_declares_only_the_options_it_has():
    names = {f.name for f in fields(method_class("gdfq").Options)}
    assert {"labels", "kd_temperature", "iters", "q_trust_steps"} <= names
    assert not names & {"alpha", "beta", "feature_weights", "q_prox_weight", "act_ranges", "wbits_rules"}
    assert build_method("gdfq").settings().keys() == build_method("gdfq").cfg.keys() - {"checkpoint_interval"}
