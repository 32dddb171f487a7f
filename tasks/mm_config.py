"""Config helpers shared by the OpenMMLab adapters (detection, segmentation)."""
from __future__ import annotations

from typing import Any

from zaqbench.errors import UserError

#: generated inputs (H, W): multiples of what the generator's upsampling produces, and no smaller than
#: the coarsest stride of a stock detector or segmentor backbone (32)
SIZE_STEP, MIN_SIZE = 4, 32


def check_input_size(size: Any, field: str = "task.input_size") -> tuple[int, int]:
    """``size`` as (height, width) if the generator can produce it for an OpenMMLab model, else a
    one-line ``UserError`` naming ``field``. The one rule for det, seg and their scenes."""
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise UserError(f"{field} must be (height, width), two integers; got {size!r}")
    height, width = size
    if min(height, width) < MIN_SIZE or height % SIZE_STEP or width % SIZE_STEP:
        raise UserError(f"{field} {height}x{width} cannot be generated: each side must be a multiple of "
                        f"{SIZE_STEP} (what the generator produces) and at least {MIN_SIZE} (the coarsest "
                        "stride of a detector or segmentor backbone)")
    return height, width


def leaf_dataset(cfg: dict) -> dict:
    """The dataset config that reads files, under wrappers such as ``RepeatDataset``."""
    while "dataset" in cfg and "ann_file" not in cfg and "data_prefix" not in cfg:
        cfg = cfg["dataset"]
    return cfg


def first_line(err: BaseException) -> str:
    """An exception's first line, for one-line ``UserError`` messages."""
    lines = str(err).strip().strip("'\"").splitlines()
    return lines[0] if lines else type(err).__name__


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
