"""Results CSVs as users save them: a byte-order mark, a bare carriage return, formula-like cells."""
import csv

from zaqbench.run.results import COLUMNS, append_rows, read_csv_rows, read_header, safe_cell
from zaqbench.run.tables import render
from tests.conftest import result_row




def test_a_byte_order_mark_is_read_and_appended_past(tmp_path):
    path = tmp_path / "cls.csv"
    append_rows(path, [result_row(method="fp", wbits=32, abits=32, value=90.0), result_row()])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved by a spreadsheet program
    assert read_header(path) == COLUMNS
    append_rows(path, [result_row(seed=1, value=55.0)])
    header, rows = read_csv_rows(path, print)
    assert header == COLUMNS and [r["seed"] for _, r in rows] == ["0", "0", "1"]
    assert "50.00 ± 7.07" in render(tmp_path, print)


def test_a_bare_carriage_return_costs_one_line_not_the_file(tmp_path):
    path = tmp_path / "cls.csv"
    append_rows(path, [result_row(), result_row(seed=1)])
    path.write_bytes(path.read_bytes() + b"cls,m,d\rjunk\n")
    problems = []
    _, rows = read_csv_rows(path, problems.append)
    assert len(rows) == 2 and len(problems) == 1 and "cls.csv:4" in problems[0]
    append_rows(path, [result_row(seed=2)])  # appends still work
    assert len(read_csv_rows(path, problems.append)[1]) == 3


def test_cells_stay_on_one_line_and_never_start_a_formula(tmp_path):
    assert safe_cell("=1+2") == "'=1+2" and safe_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe_cell("-1.5") == "-1.5" and safe_cell(-1.5) == -1.5 and safe_cell("plain") == "plain"
    path = tmp_path / "cls.csv"
    append_rows(path, [result_row(dataset="=1+2@/data/a\nb", calib_data="+x")])
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # the header and one row: a newline in a cell never splits a row
    cells = next(csv.DictReader(path.open()))
    assert cells["dataset"] == "'=1+2@/data/a\\nb" and cells["calib_data"] == "'+x"


def test_a_full_fingerprint_sees_an_in_place_edit_the_sampled_one_misses(tmp_path):
    import os

    from zaqbench.data_identity import data_identity, describe

    root = tmp_path / "data"
    for i in range(200):  # more files than the sampled fingerprint reads
        (root / "val" / "c").mkdir(parents=True, exist_ok=True)
        (root / "val" / "c" / f"{i:03d}.bin").write_bytes(bytes([i % 256]) * 100)
    cache = tmp_path / "cache"
    before = {kind: data_identity(str(root), kind, cache) for kind in ("sampled", "full")}
    target = root / "val" / "c" / "001.bin"  # not among the 64 sampled files (every third)
    stat = target.stat()
    target.write_bytes(b"\xff" * 100)  # same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = {kind: data_identity(str(root), kind, cache) for kind in ("sampled", "full")}
    assert before["sampled"] == after["sampled"]  # documented blind spot of the sampled kind
    assert before["full"]["fingerprint"] != after["full"]["fingerprint"]
    assert "fingerprint_kind" not in before["sampled"] and "#full:" in describe("d", after["full"])
    assert (cache / "file_hashes.json").exists()
