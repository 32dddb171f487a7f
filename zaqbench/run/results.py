"""Result rows: one flat CSV row per (task, model, method, bits, seed) run.

Appends are safe when several runs write the same file: a lock file
serialises writers, and each append rewrites the whole file to a temp file
that replaces the original atomically, so a reader never sees a torn row.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable

from filelock import FileLock

from ..errors import UserError

if TYPE_CHECKING:  # pandas is imported where frames are made, not at import
    import pandas as pd

COLUMNS = [
    "task", "model", "dataset", "method", "wbits", "abits", "metric", "value", "fp_value",
    "extra_metrics", "iters", "seed", "seconds",
    "w_granularity", "w_symmetric", "a_symmetric", "a_range", "first_last_fp", "bn_folded", "calib_data",
    "quant_preset", "config_hash", "device", "commit", "date",
]


#: ``calib_data`` of a row whose method cannot apply to the model: ``n/a: <reason>``, value NaN
NOT_APPLICABLE = "n/a: "


def git_commit(repo: Path | None = None, config: Path | None = None) -> str:
    """Short commit of the code that produced a row; '-dirty' (as git describe) if tracked files differ,
    or if ``config`` (the run's config file) is not committed as it is: untracked, ignored, modified,
    or outside the repository. Then the commit alone cannot reproduce the row.

    Changes under ``results/`` do not count: a regeneration appends to the committed CSVs, and
    marking every row after the first as dirty would say the *code* was uncommitted when it was not.
    """
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = git(repo, "rev-parse", "--short=10", "HEAD")
        dirty = git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return sha + ("-dirty" if dirty or (config is not None and not config_committed(repo, config)) else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def config_committed(repo: Path, config: Path) -> bool:
    """``config`` is a tracked file of ``repo`` with no uncommitted change (staged or not)."""
    top = Path(git(repo, "rev-parse", "--show-toplevel")).resolve()
    path = Path(config).resolve()
    if not path.is_relative_to(top):
        return False
    rel = path.relative_to(top).as_posix()
    tracked = git(top, "ls-files", "--", f":(literal){rel}")
    return bool(tracked) and not git(top, "status", "--porcelain", "--", f":(literal){rel}")


def format_extra_metrics(metrics: dict[str, float]) -> str:
    """``k=v;k=v``: no commas, so the CSV stays readable by plain ``cut -d,`` tools."""
    return ";".join(f"{k}={round(v, 4)}" for k, v in sorted(metrics.items()))


#: extra_metrics key: seconds of set-up a run shares across its bit widths (calibration batches made
#: once, ``MethodOutput.shared_seconds``), on every row that used it and in none of their ``seconds``
SHARED_SECONDS = "shared_seconds"

SETTING_PREFIX = "cfg."  # extra_metrics keys that are a method's settings, not measured metrics


def format_setting(value: Any) -> str:
    """One setting as text without ``,;=`` (the CSV and ``k=v;k=v`` separators): sequences are
    joined by ``/`` (an empty one is ``none``), floats keep 6 significant digits."""
    if isinstance(value, (list, tuple)):
        return "/".join(format_setting(v) for v in value) or "none"
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return text.translate(str.maketrans(",;=", "__:"))


def format_settings(settings: dict[str, Any]) -> str:
    """``cfg.k=v;cfg.k=v`` in key order: a method's settings as they go into ``extra_metrics``."""
    return ";".join(f"{SETTING_PREFIX}{k}={format_setting(v)}" for k, v in sorted(settings.items()))


LAYERS_PREFIX = "layers."  # extra_metrics keys that say which layers the evaluated model quantizes


def format_layer_coverage(quantized: list[str], full_precision: list[str]) -> str:
    """``layers.quantized=N;layers.total=M;layers.fp=a/b``: how many of the model's convolution and
    linear layers the evaluated model quantizes, and which stay in full precision."""
    total = len(quantized) + len(full_precision)
    return (f"{LAYERS_PREFIX}quantized={len(quantized)};{LAYERS_PREFIX}total={total};"
            f"{LAYERS_PREFIX}fp={format_setting(list(full_precision))}")


def parse_layer_coverage(text: str) -> dict[str, str]:
    """``extra_metrics`` -> its ``layers.*`` entries, without the prefix (empty for rows without them)."""
    items = (item.partition("=") for item in filter(None, text.split(";")))
    return {key[len(LAYERS_PREFIX):]: value for key, _, value in items if key.startswith(LAYERS_PREFIX)}


DEPLOYED_KEY = "deployed_value"  # the row's metric measured on the deployed graph (extra_metrics)
DEPLOY_PREFIX = "deploy."  # extra_metrics keys that say how the deployed value was measured


def format_deployment(value: float, info: dict[str, Any]) -> str:
    """``deployed_value=V;deploy.k=v;...``: the metric of the deployed graph and how it was run
    (runtime and version, what the graph holds, opset)."""
    return ";".join([f"{DEPLOYED_KEY}={round(value, 4)}"] +
                    [f"{DEPLOY_PREFIX}{k}={format_setting(v)}" for k, v in sorted(info.items())])


def parse_deployment(text: str) -> dict[str, str]:
    """``extra_metrics`` -> its ``deploy.*`` entries, without the prefix, plus ``value`` (the
    deployed metric, as text); empty for rows without a deployed value."""
    items = dict(item.partition("=")[::2] for item in filter(None, text.split(";")))
    if DEPLOYED_KEY not in items:
        return {}
    return {"value": items[DEPLOYED_KEY],
            **{k[len(DEPLOY_PREFIX):]: v for k, v in items.items() if k.startswith(DEPLOY_PREFIX)}}


def parse_extra_metrics(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """``extra_metrics`` -> (metrics as numbers, settings as text, without the ``cfg.`` prefix);
    the layer coverage is read by :func:`parse_layer_coverage`, how a deployed value was measured
    by :func:`parse_deployment`."""
    metrics: dict[str, float] = {}
    settings: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, _, value = item.partition("=")
        if key.startswith((LAYERS_PREFIX, DEPLOY_PREFIX)):
            continue
        if key.startswith(SETTING_PREFIX):
            settings[key[len(SETTING_PREFIX):]] = value
        else:
            metrics[key] = float(value)
    return metrics, settings


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def resolve_output(path: Path) -> Path:
    """The file a write to ``path`` must change: a symlink's target (writing through the link,
    not replacing it). A path that exists but is not a regular file is refused."""
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    if real.exists() and real.is_dir():
        raise UserError(f"--out '{path}' is a directory; give a CSV file path")
    if real.exists() and not real.is_file():
        raise UserError(f"--out '{path}' is not a regular file (a device, pipe or socket); "
                        "give a CSV file path")
    return real


def default_file_mode() -> int:
    """rw for whoever the user's umask allows: what ``open(path, 'w')`` would have given."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def replace_keeping_mode(tmp: str | Path, path: Path) -> None:
    """``os.replace`` a finished temp file onto ``path`` with ``path``'s mode (or the umask's
    for a new file): ``mkstemp`` creates 0600 files, which would silently hide results."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else default_file_mode()
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def check_writable(path: Path, columns: list[str] = COLUMNS) -> None:
    """Fail before any work if the results file cannot be written."""
    path = resolve_output(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of --out '{path}': {err.strerror}") from None
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--out '{path}' is not writable; choose another path with --out")
    if path.exists() and path.stat().st_size:
        read_header(path, columns)


BOM = "\ufeff"  # the byte-order mark spreadsheet programs put at the start of a UTF-8 CSV they save
#: a text cell starting with one of these is a formula to a spreadsheet program: it is written
#: with a leading apostrophe, which those programs show as text
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def read_header(path: Path, columns: list[str] = COLUMNS) -> list[str]:
    """The header of an existing results file (a leading byte-order mark is ignored); a header of
    another schema is an error."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").removeprefix(BOM)
    header = next(csv.reader([first.rstrip("\r\n")]), [])
    if header != columns:
        raise UserError(f"{path} has a header that does not match the results schema; "
                        "move it away or pass another --out")
    return header


def safe_cell(value: Any) -> Any:
    """A cell as it is written: on one line (a newline or carriage return inside a path or a
    name is written as ``\\n`` / ``\\r``, since rows never span lines), and text that a
    spreadsheet program would run as a formula starts with an apostrophe. Numbers are unchanged."""
    if not isinstance(value, str):
        return value
    value = value.replace("\r", "\\r").replace("\n", "\\n")
    if value.startswith(FORMULA_STARTS):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def read_csv_rows(path: Path, warn: Callable[[str], None]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a results CSV, line by line, so that one bad line —
    invalid bytes, a torn write, a wrong field count — is reported as ``file:line`` and
    skipped instead of making the whole file unreadable. Rows never span lines (no field
    holds a newline)."""
    header: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                warn(f"{path}:{line_no}: invalid bytes (not UTF-8); line skipped")
                continue
            if line_no == 1:
                text = text.removeprefix(BOM)
            if not text.strip():
                continue
            try:
                fields = next(csv.reader([text.rstrip("\r\n")]), [])
            except csv.Error as err:  # e.g. a bare carriage return inside an unquoted field
                warn(f"{path}:{line_no}: unreadable line ({err}); skipped")
                continue
            if not header:
                header = fields
                continue
            if len(fields) != len(header):
                warn(f"{path}:{line_no}: {len(fields)} fields where the header has {len(header)} "
                     "(torn or malformed line); skipped")
                continue
            rows.append((line_no, dict(zip(header, fields))))
    return header, rows


def append_rows(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS,
                key: Callable[[dict[str, Any]], Hashable] | None = None) -> list[dict[str, Any]]:
    """Append ``rows`` (dicts with exactly ``columns``) to ``path`` under a lock, atomically:
    all of them or, if anything fails, none. The existing content is copied as bytes, so
    whatever is already in the file (even invalid bytes) cannot make an append fail.

    With ``key`` (a row -> its identity, for the file's text rows and the new ones alike), a row
    whose key the file already holds, or an earlier row of ``rows`` has, is left out; the check
    runs under the same lock, so no row is appended twice. Returns the rows appended."""
    path = resolve_output(path)
    for row in rows:
        if set(row) != set(columns):
            raise ValueError(f"row keys differ from the schema: {sorted(set(row) ^ set(columns))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        existing = b""
        if path.exists() and path.stat().st_size:
            read_header(path, columns)
            existing = path.read_bytes()
            if not existing.endswith(b"\n"):
                existing += b"\n"
        if key is not None:
            rows = new_rows(path if existing else None, rows, key)
            if not rows:
                return []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        if not existing:
            writer.writeheader()
        writer.writerows({key: safe_cell(value) for key, value in row.items()} for row in rows)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(existing + buf.getvalue().encode("utf-8"))
            replace_keeping_mode(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return rows


def new_rows(path: Path | None, rows: list[dict[str, Any]],
             key: Callable[[dict[str, Any]], Hashable]) -> list[dict[str, Any]]:
    """The rows whose key neither a readable row of ``path`` nor an earlier row of ``rows`` has
    (the file's unreadable or foreign lines are the table tool's to report)."""
    seen: set[Hashable] = set()
    for _, row in (read_csv_rows(path, lambda _: None)[1] if path is not None else []):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            seen.add(key(row))
    kept = []
    for row in rows:
        if key(row) not in seen:
            seen.add(key(row))
            kept.append(row)
    return kept


def read_frame(path: Path, warn: Callable[[str], None]):
    """A results or curve CSV as a pandas frame with numeric columns converted; lines that
    cannot be read are reported through ``warn`` and skipped."""
    import pandas as pd

    _, lines = read_csv_rows(path, warn)
    df = pd.DataFrame([row for _, row in lines])
    for col in ("wbits", "abits", "value", "fp_value", "seed", "iteration", "iters", "seconds", *PROBE_SETS):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.dropna(subset=[c for c in ("value", "iteration") if c in df])


# tools/probe_snapshots.py's D_o columns; read here by the run's summary and by tools/make_tables.py
PROBE_SETS = ("d_o_initial_g", "d_o_final_g")


def probe_picks(rows: pd.DataFrame) -> dict[str, tuple[float, pd.Series]]:
    """For each probe set, the rank correlation of -D_o with the metric over one run's snapshots
    (1: the lowest D_o is always the best model) and the snapshot row its lowest D_o picks."""
    return {col: (rows["value"].rank().corr((-rows[col]).rank()), rows.loc[rows[col].idxmin()])
            for col in PROBE_SETS}
