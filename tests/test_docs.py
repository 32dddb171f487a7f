"""Docs that cannot rot: every relative link resolves, every command shown names options the
command has, and every config path shown exists."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "configs" / "README.md", ROOT / "results" / "INDEX.md",
        *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?:tools/(?P<tool>[a-z_]+)\.py|\bzaqbench (?P<sub>[a-z][a-z-]*[a-z]))")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
CONFIG = re.compile(r"\bconfigs/[\w/.-]+\.py\b")
#: tools that are sub-commands of the zaqbench command
TOOL_COMMANDS = {"run_task": "run", "budget_curve": "curve", "probe_snapshots": "probes", "regenerate": "grid",
                 "make_tables": "tables", "make_plots": "plots", "benchmark_zaq": "bench",
                 "benchmark_deploy": "bench-deploy"}


def broken_links(doc: Path, text: str) -> list[str]:
    """The relative links of ``text`` (a file at ``doc``) whose target does not exist."""
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        if not (doc.parent / target.split("#")[0]).exists():
            bad.append(target)
    return bad


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, options) for every command line shown; a line ending in a backslash continues."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        for match in COMMAND.finditer(line):
            name = match.group("sub") or TOOL_COMMANDS.get(match.group("tool"), match.group("tool"))
            rest = line[match.end():].split("`")[0]  # inline code ends at the backtick
            rest = re.split(r"\s#\s|\s\|\s|(?:\s|^)(?:&&|;)\s", rest)[0]  # a comment, a table cell, the next command
            found.append((name, OPTION.findall(rest)))
    return found


@lru_cache(maxsize=None)
def help_text(name: str) -> str:
    """The ``--help`` of a zaqbench sub-command (in this process) or of another tool (a child)."""
    from zaqbench.run.cli import COMMANDS, run_command

    if name in COMMANDS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            run_command(name, ["--help"])
        return out.getvalue()
    tool = ROOT / "tools" / f"{name}.py"
    if not tool.exists():
        return ""
    return subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT).stdout


def unknown_options(name: str, options: list[str]) -> list[str]:
    text = help_text(name)
    return [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]


def test_the_checks_catch_a_broken_link_and_an_unknown_option(tmp_path):
    doc = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("x")
    assert broken_links(doc, "[ok](there.md) [web](https://x.org) [gone](missing.md#part)") == ["missing.md#part"]
    shown = shown_commands("`tools/run_task.py --task det --modle retinanet`")
    assert shown == [("run", ["--task", "--modle"])] and unknown_options("run", shown[0][1]) == ["--modle"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc, doc.read_text()) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_has_the_options_shown(doc):
    bad = [(name, unknown_options(name, options)) for name, options in shown_commands(doc.read_text())]
    assert [(name, opts) for name, opts in bad if opts] == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_path_shown_exists(doc):
    placeholder = re.compile(r"/[A-Z]/|/[A-Z]\.py$")  # configs/T/M.py stands for any config
    shown = [path for path in CONFIG.findall(doc.read_text()) if not placeholder.search(path)]
    assert [path for path in shown if not (ROOT / path).exists()] == []
