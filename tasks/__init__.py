"""Task adapters. Importing this package registers every adapter in
``zaqbench.registry.TASKS``; mmdet/mmseg are imported only when a detection or
segmentation adapter is used."""
from importlib import import_module

for _name in ("classification", "detection", "segmentation"):
    try:
        import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:  # an adapter file not written yet
        if _err.name != f"{__name__}.{_name}":
            raise
