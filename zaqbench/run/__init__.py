"""What the command-line tools do, as functions: the result tables, the plots and the grid.

Task adapters and methods are found through :mod:`zaqbench.registry`; a caller registers
them first (``import tasks``, ``import zaqbench.methods`` and any task or method of its own).
"""
