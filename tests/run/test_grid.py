"""The grid's defaults come from the registries and the config root, not from lists in a tool."""
from __future__ import annotations

import tasks  # noqa: F401 - registers the task adapters
import tests.toy_task  # noqa: F401 - a task registered from outside the project
from zaqbench import methods  # noqa: F401 - registers the methods
from zaqbench.registry import METHODS, TASKS
from zaqbench.run.grid import default_methods, default_tasks


def test_default_tasks_are_the_tasks_with_a_default_model(tmp_path):
    for task in ("cls", "toy", "mine"):  # 'mine': registered only by its config's custom_imports
        (tmp_path / task).mkdir()
        (tmp_path / task / "DEFAULT").write_text("model\n")
    (tmp_path / "det").mkdir()  # registered, but no default model: not part of the grid
    assert default_tasks(tmp_path) == [t for t in TASKS.module_dict if t in ("cls", "toy")] + ["mine"]


def test_default_methods_are_the_registered_grid_methods_in_display_order():
    names = default_methods().split(",")
    assert names[0] == "fp" and names[-2:] == ["real-ptq", "real-kd"]  # the reference rows close the table
    assert set(names) == {n for n, cls in METHODS.module_dict.items() if cls.in_default_grid}
    assert [METHODS.get(n).display_order for n in names] == sorted(METHODS.get(n).display_order for n in names)
