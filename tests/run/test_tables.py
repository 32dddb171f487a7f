"""Result tables follow the registries: a task or a method registered from outside the project
gets its rows into the tables with no edit to any tool."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tests.toy_task  # noqa: F401 - registers the toy task, as a user's own module would
from zaqbench.run.tables import main as make_tables
from zaqbench.methods import Method, MethodOutput, RunContext
from zaqbench.registry import METHODS, grid_methods, method_label, method_order, task_title
from zaqbench.run.results import COLUMNS, append_rows

ROOT = Path(__file__).resolve().parents[2]


def row(**kw) -> dict:
    base = {c: "x" for c in COLUMNS}
    base.update(task="toy", model="quadrants", dataset="d", method="ptq", wbits=4, abits=4, metric="accuracy",
                value=45.0, fp_value=90.0, iters=0, seed=0, seconds=1.0, commit="abc",
                date="2026-11-27T00:00:00+00:00", device="cpu", extra_metrics="")
    base.update(kw)
    return base


def toy_rows(*methods: str) -> list[dict]:
    return [row(method="fp", wbits=32, abits=32, value=90.0)] + [row(method=m) for m in methods]


def table_methods(text: str, model: str) -> list[str]:
    """The method column of one model's table lines, top to bottom."""
    return [line.split("|")[2].strip() for line in text.splitlines() if line.startswith(f"| {model} |")]


def test_a_task_registered_from_outside_gets_its_section_through_the_tool(tmp_path):
    append_rows(tmp_path / "toy.csv", toy_rows("ptq", "zaq"))
    out = tmp_path / "README.md"
    assert make_tables(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Toy quadrants (`toy`), metric: accuracy" in text  # the adapter's own title
    assert table_methods(text, "quadrants") == ["fp", "ptq", "zaq"]
    assert "| quadrants | zaq | 90.00 | 45.00 (50.0%) |" in text


def test_a_task_not_registered_in_the_tool_is_titled_by_its_key(tmp_path):
    """A task a config registers through ``custom_imports`` is unknown to the table tool's process:
    its ``<task>.csv`` still gets a section; a row of another unknown task is reported, not rendered."""
    append_rows(tmp_path / "quads.csv", [*[{**r, "task": "quads"} for r in toy_rows("ptq")],
                                         row(task="typo", method="zaq")])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tables.py"), "--results", str(tmp_path),
                           "--out", "-"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "## quads (`quads`), metric: accuracy" in proc.stdout
    assert table_methods(proc.stdout, "quadrants") == ["fp", "ptq"]
    assert "quads.csv:4: unknown task 'typo'; skipped" in proc.stderr


class OutsideMethod(Method):
    """A method defined outside the package: noise PTQ's place in the tables is all it needs here."""

    name = "outside"
    display_order = 15  # between ptq (10) and dfq (20)
    table_note = "(defined in a test)"

    def run(self, ctx: RunContext) -> MethodOutput:
        return MethodOutput(ctx.teacher, calib_data="none")


@pytest.fixture
def outside_method():
    METHODS.register_module(name=OutsideMethod.name, module=OutsideMethod)
    yield OutsideMethod.name
    METHODS.module_dict.pop(OutsideMethod.name)


def test_a_method_registered_from_outside_sits_at_its_declared_order(tmp_path, outside_method):
    append_rows(tmp_path / "toy.csv", toy_rows("dfq", outside_method, "zaq", "ptq", "unregistered"))
    assert make_tables(["--results", str(tmp_path), "--out", str(tmp_path / "README.md")]) == 0
    text = (tmp_path / "README.md").read_text()
    assert table_methods(text, "quadrants") == ["fp", "ptq", "outside (defined in a test)", "dfq", "zaq",
                                                "unregistered"]  # a name no method has goes last
    grid = grid_methods()
    assert grid.index("ptq") < grid.index(outside_method) < grid.index("dfq")  # the grid runs it too


def test_registry_lookups_fall_back_for_unknown_names():
    assert task_title("cls") == "Classification" and task_title("nope") == "nope"
    assert method_label("real-ptq") == "real-ptq (reference, uses real data)" and method_label("nope") == "nope"
    assert method_order("fp") < method_order("zaq") < method_order("real-ptq") < method_order("nope")
    assert "zaq-official" not in grid_methods()  # run by the paper config only


def test_deployed_values_sit_beside_the_simulated_ones(tmp_path):
    how = "deploy.graph=W4:int8 QDQ + Clip[-8..7] per-channel/A4:uint8 QDQ + Clip[0..15];deploy.opset=21;" \
          "deploy.runtime=onnxruntime-1.32.0;deploy.threads=1;deploy.cpu=AMD EPYC (avx2)"
    append_rows(tmp_path / "toy.csv", toy_rows("zaq") + [
        row(method="ptq", seed=0, value=45.0, extra_metrics=f"deployed_value=44.0;{how}"),
        row(method="ptq", seed=1, value=47.0, extra_metrics=f"deployed_value=47.0;{how};layers.quantized=3")])
    out = tmp_path / "README.md"
    assert make_tables(["--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| quadrants | ptq | 90.00 | 46.00 ± 1.41 (51.1%) |" in text  # the simulated table is unchanged
    assert ("| quadrants | ptq | W4A4 | 46.00 ± 1.41 (51.1%) | 45.50 ± 2.12 (50.6%) | -0.50 | onnxruntime-1.32.0, "
            "1 thread(s) on AMD EPYC (avx2), opset 21: W4:int8 QDQ + Clip[-8..7] per-channel/A4:uint8 QDQ + Clip[0..15] |") in text
    assert [line for line in text.splitlines() if "| quadrants | zaq | W4A4" in line] == []  # no deployed value


def test_rows_without_deployed_values_render_no_deployed_table(tmp_path):
    append_rows(tmp_path / "toy.csv", toy_rows("ptq"))
    out = tmp_path / "README.md"
    assert make_tables(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert "Deployed" not in out.read_text()
