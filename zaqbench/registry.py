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
