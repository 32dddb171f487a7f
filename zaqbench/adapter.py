"""The task-adapter interface: the only place a task lives.

An adapter answers six questions and nothing else in the code knows about the
task: which full-precision model, what an input looks like, which feature maps
to align, what the raw outputs are, how a model is scored, where real data is.
The core (engine, methods, quantizer) only ever talks to this interface.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import nn

from .data_identity import data_identity
from .errors import UserError
from .options import Options, check_entries, hashed_entries, one_of, option, positive_int

Nested = Any  # a tensor, or lists / tuples / dicts of them


@dataclass(frozen=True)
class InputSpec:
    """What the model consumes: a (N, channels, height, width) float tensor that is
    already normalised with ``mean`` / ``std`` (the generator's target)."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.channels, self.height, self.width)


@dataclass
class TeacherOptions(Options):
    """The keys of ``task.teacher`` every adapter reads (an adapter reads more of its own)."""

    section: ClassVar[str] = "task.teacher"

    threads: int | None = option(
        None, positive_int | one_of(None, text="None for the process's thread count"), hashed=False,
        help="CPU threads the teacher is trained with on any machine: on the CPU the trained teacher depends "
             "on the thread count (docs/findings/threads_and_clones.md), so pinning it makes a fresh machine "
             "train the teacher behind the committed rows; it does not change which teacher it is")


@dataclass
class EvalOptions(Options):
    """The keys of ``task.eval`` every adapter's evaluation reads."""

    section: ClassVar[str] = "task.eval"

    batch_size: int | None = option(None, positive_int | one_of(None, text="None for the task's default"),
                                    help="images per evaluation batch")
    max_samples: int | None = option(None, positive_int | one_of(None, text="None for all samples"),
                                     help="evaluate on the first N samples")


#: the shared sections of ``cfg.task`` and what they declare
SHARED_SECTIONS: dict[str, type[Options]] = {"teacher": TeacherOptions, "eval": EvalOptions}


def hashed_task(task: Any) -> Any:
    """The ``task`` section as it enters a row's config hash: each shared section by the one hashing
    rule (:func:`zaqbench.options.hashed_entries`: ``teacher.threads`` stays out), the rest as given."""
    if not isinstance(task, Mapping):
        return task
    return {**task, **{key: hashed_entries(task[key], schema) for key, schema in SHARED_SECTIONS.items()
                       if isinstance(task.get(key), Mapping)}}


class TaskAdapter(abc.ABC):
    """Base class for task adapters; register subclasses in ``zaqbench.registry.TASKS``.

    Args:
        cfg: the whole loaded config (``configs/<task>/<model>.py``, an mmengine
            ``Config``); the adapter's own fields are in ``cfg.task``, and mm-based
            adapters also read the OpenMMLab fields (``model``, dataloaders...).
        model_name: the config's model name (for result rows).
        data_root: user-supplied data location, or None for the embedded default.
        cache_dir: where the adapter may cache generated data (shared across runs).
        device: where models and batches live.
    """

    #: name of the primary metric, e.g. 'top1', 'bbox_mAP', 'mIoU'
    metric: str = ""
    #: the task's title in result tables, e.g. 'Detection'; empty: the task's registry key
    title: str = ""
    #: show progress bars for long work (teacher training, data loading); ``--no-progress`` clears it
    progress: bool = True
    #: how the user's data is fingerprinted: 'sampled' or 'full' (``--fingerprint``)
    fingerprint_kind: str = "sampled"
    #: top-level keys of ``cfg.task`` this adapter reads; any other key is a typo and an error
    #: (``type`` is always allowed). Empty means "not declared": no check.
    task_fields: frozenset[str] = frozenset()
    #: the adapter writes into ``cache_dir`` during a run (generated data, training logs), so an
    #: unwritable cache is an error up front rather than a failure halfway
    writes_cache: bool = False

    def __init__(
        self,
        cfg: dict[str, Any],
        model_name: str,
        data_root: str | None,
        cache_dir: Path,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.task_cfg: dict[str, Any] = dict(cfg.get("task", {}))
        self.model_name = model_name
        self.data_root = data_root
        self.cache_dir = Path(cache_dir)
        self.device = torch.device(device)
        self._cached_data_identity: dict[str, str] | None = None

    def data_identity(self) -> dict[str, str]:
        """The user's data location and content fingerprint ({} for the embedded default);
        computed once. The teacher cache key, config hashes and rows include it."""
        if self._cached_data_identity is None:
            self._cached_data_identity = data_identity(self.data_root, self.fingerprint_kind, self.cache_dir)
        return self._cached_data_identity

    def check(self) -> None:
        """Validate the adapter's own config and data layout before any work (teacher
        training, method runs); raise ``UserError`` with one line naming the fix.
        Called by the runner's plan; the default checks ``task_fields``."""
        if self.task_fields:
            unknown = sorted(set(self.task_cfg) - set(self.task_fields) - {"type"})
            if unknown:
                raise UserError(f"unknown task field(s) {', '.join('task.' + k for k in unknown)}; "
                                f"valid fields: {', '.join(sorted(self.task_fields))}")
        for key, schema in SHARED_SECTIONS.items():  # a bad teacher.threads or eval.batch_size fails here
            check_entries(self.task_cfg.get(key), schema)

    @property
    def model_label(self) -> str:
        """The ``model`` column of result rows: the config name, unless the adapter knows
        better (e.g. the config name plus an architecture set with --cfg-options)."""
        return self.model_name

    def fp_warning(self, metrics: dict[str, float]) -> str | None:
        """A line to print when the full-precision metrics look like a setup mistake (e.g. a
        score at chance level from wrong labels), or None."""
        return None

    # 1. the full-precision model -------------------------------------------
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The architecture, freshly initialised (no download), on ``self.device``."""

    @abc.abstractmethod
    def train_teacher(self, model: nn.Module) -> None:
        """Train ``model`` in place on the real training split (teacher for the suite)."""

    @property
    def teacher_threads(self) -> int | None:
        """``task.teacher.threads`` (:class:`TeacherOptions`; None: the process's own thread count)."""
        return check_entries(self.task_cfg.get("teacher"), TeacherOptions).threads

    def teacher_key(self) -> dict[str, Any]:
        """Everything the trained teacher depends on; hashed to name its cache file."""
        teacher = self.task_cfg.get("teacher")
        if isinstance(teacher, Mapping):
            teacher = hashed_entries(teacher, TeacherOptions)
        return {"task": type(self).__name__, "model": self.task_cfg.get("model"),
                "teacher": teacher, "dataset": self.dataset_name}

    def task_for_hash(self, task: Any) -> Any:
        """``cfg.task`` as it enters a row's config hash (after ``teacher.threads`` is dropped):
        as written, unless an adapter spells a field the way its committed rows were hashed."""
        return task

    def load_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load a user checkpoint's weights (strict); override to remap keys."""
        model.load_state_dict(state, strict=True)

    # 2. the input -----------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec:
        """Shape and normalisation of one model input."""

    # 3. feature maps ----------------------------------------------------------
    @property
    @abc.abstractmethod
    def feature_names(self) -> list[str]:
        """Module names whose outputs are aligned by the feature-level discrepancy,
        shallow to deep; the last one is also used by the activation regulariser."""

    # 4. raw outputs -------------------------------------------------------------
    def forward_raw(self, model: nn.Module, x: torch.Tensor) -> Nested:
        """Raw outputs before post-processing (logits, per-level maps...)."""
        return model(x)

    # 5. the score ---------------------------------------------------------------
    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Score ``model`` on the evaluation split; must contain ``self.metric``."""

    def deployed_model(self, model: nn.Module, raw: Callable[[torch.Tensor], Nested]) -> nn.Module:
        """A stand-in for ``model`` that :meth:`evaluate` scores as it scores ``model``, with
        ``raw(x)`` (a deployed graph's outputs for a batch, nested as :meth:`forward_raw` returns
        them) in place of the network; whatever ``model`` does around the network (data
        preprocessing, decoding, resizing) runs as is. Raise ``UserError`` for a model that cannot
        be scored this way. Default: a module whose forward is ``raw``, right where
        ``forward_raw(model, x)`` is ``model(x)``."""
        from .deploy.runtime import DeployedRaw

        return DeployedRaw(raw)

    # 6. real data ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def dataset_name(self) -> str:
        """Short name of the data the model is evaluated on (for result rows)."""

    def check_real_data(self) -> None:
        """Raise ``UserError`` (one line) if :meth:`real_batches` cannot deliver: called when the plan
        is built for a method that uses real images, so the refusal comes before any work."""

    @abc.abstractmethod
    def real_batches(self, batch_size: int, num_batches: int, seed: int) -> Iterator[torch.Tensor]:
        """``num_batches`` full batches of normalised training images (no labels), in an order drawn
        from ``seed``, for the real-data reference rows; passes over the training set repeat as needed
        (``real-kd`` asks for as many batches as its Q steps)."""
