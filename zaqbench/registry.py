"""Registries for task adapters and quantization methods.

mmengine's ``Registry`` does the bookkeeping (duplicates raise); ``build_task``
and ``build_method`` add the error a user should see for an unknown name:
one line listing what exists.
"""
from __future__ import annotations

from typing import Any

from mmengine.registry import Registry

from .errors import UserError

TASKS = Registry("zaqbench task adapter")
METHODS = Registry("zaqbench quantization method")


def _lookup(registry: Registry, name: str, what: str) -> type:
    cls = registry.get(name) if name in registry.module_dict else None
    if cls is None:
        valid = ", ".join(sorted(registry.module_dict)) or "(none registered)"
        raise UserError(f"unknown {what} '{name}'; valid {what}s: {valid}")
    return cls


def task_class(name: str) -> type:
    return _lookup(TASKS, name, "task")


def method_class(name: str) -> type:
    return _lookup(METHODS, name, "method")


def build_task(name: str, **kwargs: Any):
    return task_class(name)(**kwargs)


def build_method(name: str, **kwargs: Any):
    return method_class(name)(**kwargs)


# -- what tables, plots and the grid read from the registries ----------------------------------
#: display order of a method that declares none (and of a name no method is registered under):
#: after every built-in method, ties broken by name
UNLISTED_ORDER = 100


def task_title(name: str) -> str:
    """A task's display title, as its adapter declares it (``title``); the task key itself for a
    task that declares none or is not registered in this process (e.g. one registered through a
    config's ``custom_imports``), so its rows still get a section."""
    cls = TASKS.module_dict.get(name)
    return getattr(cls, "title", "") or name


def method_order(name: str) -> int:
    """Where a method's rows sit in a table (its ``display_order``); unknown names go last."""
    cls = METHODS.module_dict.get(name)
    return getattr(cls, "display_order", UNLISTED_ORDER) if cls is not None else UNLISTED_ORDER


def method_label(name: str) -> str:
    """A method's name in a table, with the note its class declares (``table_note``), if any."""
    note = getattr(METHODS.module_dict.get(name), "table_note", "")
    return f"{name} {note}" if note else name


def grid_methods() -> list[str]:
    """The methods a standard grid runs: every registered one that does not opt out
    (``in_default_grid = False``), in display order."""
    names = [name for name, cls in METHODS.module_dict.items() if getattr(cls, "in_default_grid", True)]
    return sorted(names, key=lambda name: (method_order(name), name))
