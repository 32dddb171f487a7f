"""Safe checkpoint I/O: atomic writes, weights-only reads, clear errors."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .run.results import replace_keeping_mode


class SaveError(UserError):
    """A file could not be written (disk full, permissions); the previous file is intact."""


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` to a temp file and rename: never a torn file.

    The file gets the mode of the one it replaces (or the user's umask for a new one).
    A failed write (e.g. a full disk, which torch reports as a C++ ``RuntimeError``)
    leaves the previous file untouched and raises ``SaveError``: one line, no traceback.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise SaveError(f"cannot write '{path}': {err.strerror}; the previous file (if any) is intact") from None
    os.close(fd)
    try:
        torch.save(obj, tmp)
        replace_keeping_mode(tmp, path)
    except (OSError, RuntimeError) as err:
        Path(tmp).unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
        raise SaveError(f"cannot write '{path}': {reason}; the previous file (if any) is intact; "
                        "free disk space or choose another --work-dir / $ZAQBENCH_CACHE, then rerun "
                        "(with --resume for a ZAQ run)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_file(path: str | Path, trust: bool = False, map_location: Any = "cpu", *,
              remake: str | None = None) -> Any:
    """``torch.load`` with ``weights_only=True`` unless ``trust`` (the user's --trust-checkpoint).

    ``remake``: for a file zaqbench writes itself (weights-only: a run's checkpoint, snapshots,
    generator), how to write it again; its errors then say that, and never suggest --checkpoint
    or --trust-checkpoint, which do not apply to it.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' does not exist; {remake}" if remake else
                        f"checkpoint '{path}' does not exist; check the path given to --checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if remake:
            raise UserError(f"'{path}' holds more than weights, so it is not the weights-only file zaqbench "
                            f"writes there; delete it and {remake}") from None
        if not trust:
            raise UserError(
                f"checkpoint '{path}' holds more than weights (e.g. numpy objects in OpenMMLab meta) and "
                "cannot be loaded weights-only; if you trust its source, rerun with --trust-checkpoint") from None
        raise UserError(f"checkpoint '{path}' is corrupt or not a PyTorch file: {str(err).splitlines()[0]}") from None
    except Exception as err:  # noqa: BLE001 - the unpickler raises anything (KeyError on a text file)
        fix = f"delete it and {remake}" if remake else "check the path given"
        raise UserError(f"{'' if remake else 'checkpoint '}'{path}' is corrupt or not a PyTorch file "
                        f"({type(err).__name__}: {_first_line(err)}); {fix}") from None


def extract_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the common wrappers ({'state_dict': ...}, {'model': ...})."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint '{path}' does not contain a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def describe_key_mismatch(model_keys: set[str], ckpt_keys: set[str], path: str | Path) -> str | None:
    missing = sorted(model_keys - ckpt_keys)
    unexpected = sorted(ckpt_keys - model_keys)
    if not missing and not unexpected:
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return (f"checkpoint '{path}' does not match the model: keys " + "; ".join(parts)
            + "; check --task/--model or the config")
