"""Config helpers shared by the OpenMMLab adapters (detection, segmentation)."""
from __future__ import annotations

from typing import Any


def plain(obj: Any) -> Any:
    """ConfigDicts (and nested ones) as plain dicts, for hashing or for mmengine builders.

    Tuples stay tuples: mmcv transforms insist on them (``RandomResize(scale=(2048, 1024))``
    refuses a list), and JSON hashing writes them as lists, so cache keys do not change.
    """
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def without_pretrained(cfg: Any) -> Any:
    """A copy of a model config that downloads nothing: ``pretrained`` and
    ``init_cfg=dict(type='Pretrained', ...)`` become None at any depth, so stock
    OpenMMLab configs can be used as they are."""
    if isinstance(cfg, dict):
        out = type(cfg)()
        for key, value in cfg.items():
            if key == "pretrained" or (key == "init_cfg" and _is_pretrained_init(value)):
                value = None
            out[key] = without_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(without_pretrained(v) for v in cfg)
    return cfg


def _is_pretrained_init(init_cfg: Any) -> bool:
    items = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(i, dict) and i.get("type") == "Pretrained" for i in items)
