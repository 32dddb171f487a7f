import pytest

import tasks  # noqa: F401
from zaqbench import methods  # noqa: F401
from zaqbench.errors import UserError
from zaqbench.registry import METHODS, TASKS, method_class, task_class


def test_known_names_resolve():
    assert task_class("cls").__name__ == "ClassificationAdapter"
    assert method_class("zaq").__name__ == "ZAQ"


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UserError) as err:
        task_class("nope")
    assert "unknown task 'nope'" in str(err.value) and "cls" in str(err.value)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UserError) as err:
        method_class("zaqq")
    for name in ("fp", "ptq", "real-ptq", "zeroq", "zaq", "zaq-no-feat", "zaq-no-act"):
        assert name in str(err.value)


def test_duplicate_registration_raises():
    with pytest.raises(KeyError):
        TASKS.register_module(name="cls", module=type("Dup", (), {}))
    with pytest.raises(KeyError):
        METHODS.register_module(name="zaq", module=type("Dup", (), {}))
