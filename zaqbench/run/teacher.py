"""The full-precision model P: a user checkpoint, or a teacher the suite trains once and caches."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from ..adapter import TaskAdapter
from ..checkpoint import SaveError, atomic_save, describe_key_mismatch, extract_state_dict, load_file
from ..devices import pinned_threads
from ..errors import UserError


#: teachers of the shipped configs, trained by their own recipe (``task.teacher``) and committed, so a
#: fresh clone's benchmark needs no training and every machine gets the teacher the committed rows used
SHIPPED_TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
#: set to 0 to train a shipped config's teacher here instead (it lands in the cache, as any teacher)
SHIPPED_SWITCH = "ZAQBENCH_SHIPPED_TEACHERS"


def shipped_teacher(name: str) -> Path | None:
    """The committed teacher file named ``name`` (same name as its cache file: same key), if any."""
    if os.environ.get(SHIPPED_SWITCH, "1") == "0":
        return None
    path = SHIPPED_TEACHERS / name
    return path if path.is_file() else None


def teacher_ready(path: Path) -> bool:
    """Whether the teacher whose cache file is ``path`` needs no training: cached, or shipped."""
    return path.exists() or shipped_teacher(path.name) is not None


def teacher_cache_path(adapter: TaskAdapter, cache_dir: Path, task: str) -> Path:
    key_fields = adapter.teacher_key()
    if adapter.data_identity():  # user data: part of the key whatever the adapter's teacher_key says
        key_fields = {**key_fields, "data_identity": adapter.data_identity()}
    key = json.dumps(key_fields, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / "teachers" / f"{task}-{adapter.model_name}-{digest}.pth"


def load_weights(adapter: TaskAdapter, model: nn.Module, path: str | Path, trust: bool) -> None:
    state = extract_state_dict(load_file(path, trust=trust), path)
    problem = describe_key_mismatch(set(model.state_dict()), set(state), path)
    if problem:
        raise UserError(problem)
    try:
        adapter.load_state_dict(model, state)
    except RuntimeError as err:  # shape mismatches
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
        raise UserError(f"checkpoint '{path}' does not match the model: {detail}") from None


def get_teacher(adapter: TaskAdapter, task: str, cache_dir: Path, checkpoint: str | None = None,
                trust: bool = False) -> tuple[nn.Module, str]:
    """Return (P in eval mode, where its weights came from)."""
    model = adapter.build_model()
    if checkpoint:
        load_weights(adapter, model, checkpoint, trust)
        source = str(checkpoint)
    else:
        path = teacher_cache_path(adapter, cache_dir, task)
        shipped = shipped_teacher(path.name)
        if path.exists():
            load_weights(adapter, model, path, trust=False)
        elif shipped is not None:
            load_weights(adapter, model, shipped, trust=False)
            print(f"[zaqbench] the teacher is the shipped {shipped.name} (set {SHIPPED_SWITCH}=0 to train it "
                  "here instead)", file=sys.stderr)
            cache(model, path)
        else:
            threads = adapter.teacher_threads if adapter.device.type == "cpu" else None  # a CPU setting
            if threads is not None:
                print(f"[zaqbench] training the teacher with {threads} CPU thread(s) (task.teacher.threads; "
                      f"this process has {torch.get_num_threads()}), so it is the same teacher on any machine",
                      file=sys.stderr)
            with pinned_threads(threads):
                adapter.train_teacher(model)
            cache(model, path)
        source = str(path)
    return model.eval(), source


def cache(model: nn.Module, path: Path) -> None:
    """Write the teacher to the cache, where every later run (and a Ray job) finds it."""
    try:
        atomic_save(model.state_dict(), path)
    except SaveError as err:  # the teacher still serves this run
        print(f"warning: the teacher was not cached: {err}", file=sys.stderr)
