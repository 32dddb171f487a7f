import csv
import multiprocessing as mp
import subprocess

import pytest

from zaqbench.errors import UserError
from zaqbench.run.results import COLUMNS, append_rows, check_writable, git_commit


def row(i):
    return {c: f"{c}{i}" for c in COLUMNS}


def _append_many(path, start):
    for i in range(start, start + 10):
        append_rows(path, [row(i)])


def test_append_writes_header_once(tmp_path):
    path = tmp_path / "r.csv"
    append_rows(path, [row(0)])
    append_rows(path, [row(1), row(2)])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["method0", "method1", "method2"]


def test_append_with_a_key_leaves_out_rows_the_file_or_the_call_already_has(tmp_path):
    from tests.conftest import result_row
    from zaqbench.run.runner import row_key

    path = tmp_path / "r.csv"
    append_rows(path, [result_row(seed=0)])
    new = [result_row(seed=0, value=1.0), result_row(seed=1), result_row(seed=1, value=2.0)]
    assert append_rows(path, new, key=row_key) == [new[1]]  # the file's seed 0, then the call's first seed 1
    assert append_rows(path, new, key=row_key) == []
    with open(path) as f:
        assert [(r["seed"], r["value"]) for r in csv.DictReader(f)] == [("0", "45.0"), ("1", "45.0")]


def test_concurrent_appends_lose_nothing(tmp_path):
    path = tmp_path / "r.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, 100 * k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and len({r["seed"] for r in rows}) == 40


def test_schema_mismatch_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="header"):
        append_rows(path, [row(0)])
    assert path.read_text() == "a,b\n1,2\n"


def test_bad_row_keys_rejected(tmp_path):
    with pytest.raises(ValueError):
        append_rows(tmp_path / "r.csv", [{"task": "x"}])
    assert not (tmp_path / "r.csv").exists()


def test_unwritable_out(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="directory"):
        check_writable(tmp_path)
    check_writable(tmp_path / "ok.csv")  # a writable path passes
    # root may write anywhere, so a chmod-ed folder proves nothing here: make the permission check say no
    monkeypatch.setattr("zaqbench.run.results.os.access", lambda *_: False)
    with pytest.raises(UserError, match="not writable"):
        check_writable(tmp_path / "r.csv")
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create"):
        check_writable(blocker / "sub" / "r.csv")


def test_extra_metrics_have_no_commas():
    from zaqbench.run.results import format_extra_metrics

    text = format_extra_metrics({"b": 0.123456, "a": 1.0})
    assert text == "a=1.0;b=0.1235" and "," not in text


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


def _commit_all(repo):
    """A git repository whose present files are all committed."""
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")


def test_git_commit_marks_code_changes_dirty_but_not_result_appends(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cls.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _commit_all(tmp_path)
    clean = git_commit(tmp_path)
    assert len(clean) == 10 and not clean.endswith("-dirty")
    (tmp_path / "results" / "cls.csv").write_text("a\nb\n")  # a regeneration appending rows
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")  # uncommitted code
    assert git_commit(tmp_path) == clean + "-dirty"


def test_git_commit_marks_an_uncommitted_config_dirty(tmp_path):
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    (repo / "configs" / "a.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("ignored.py\n")
    _commit_all(repo)
    clean = git_commit(repo)
    assert git_commit(repo, config=repo / "configs" / "a.py") == clean
    (repo / "configs" / "b.py").write_text("x = 1\n")  # untracked: git status --untracked-files=no misses it
    (repo / "ignored.py").write_text("x = 1\n")
    outside = tmp_path / "mine.py"
    outside.write_text("x = 1\n")
    for config in (repo / "configs" / "b.py", repo / "ignored.py", outside):
        assert git_commit(repo, config=config) == clean + "-dirty", config
    assert git_commit(repo) == clean  # the code itself is still the commit
    (repo / "configs" / "a.py").write_text("x = 2\n")
    _git(repo, "add", "configs/a.py")  # staged but not committed
    assert git_commit(repo, config=repo / "configs" / "a.py") == clean + "-dirty"


def test_settings_share_extra_metrics_without_commas_and_read_back():
    from zaqbench.run.results import format_extra_metrics, format_settings, parse_extra_metrics

    settings = {"iters": 40, "q_lr": 0.01, "g_betas": (0.9, 0.999), "lr_milestones": (), "q_bn_update": False,
                "gen_output": "valid-range", "lr_third": 1 / 3, "odd": "a,b;c=d"}
    text = ";".join([format_extra_metrics({"mAP_50": 0.51234}), format_settings(settings)])
    assert "," not in text
    assert "cfg.iters=40;" in text and "cfg.lr_third=0.333333" in text
    metrics, back = parse_extra_metrics(text)
    assert metrics == {"mAP_50": 0.5123}
    assert back == {"iters": "40", "q_lr": "0.01", "g_betas": "0.9/0.999", "lr_milestones": "none",
                    "q_bn_update": "False", "gen_output": "valid-range", "lr_third": "0.333333", "odd": "a_b_c:d"}
