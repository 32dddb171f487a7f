"""One comma-list rule for every command: empty items, wrong kinds and repeats are errors."""
import pytest

from zaqbench.curves import parse_int_list
from zaqbench.errors import UserError
from zaqbench.run.lists import parse_list


def test_items_keep_their_order_and_kind():
    assert parse_list(" ptq, zaq ", "--method") == ["ptq", "zaq"]
    assert parse_list("8,6,4", "--bits", int) == [8, 6, 4]


@pytest.mark.parametrize("text, message", [("", "--seeds is empty"), ("0,,1", "has an empty item"),
                                           ("0,x", "must be comma-separated integers"), ("0,1,0", "repeats 0")])
def test_bad_lists_are_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_list(text, "--seeds", int)


def test_a_repeat_is_an_error_in_every_command():
    with pytest.raises(UserError, match="repeats 0"):
        parse_int_list("0,0", "--seeds", 0)  # budget curves' seeds, as the runner's --bits
    assert parse_int_list("40,0,10", "--points", 0) == [0, 10, 40]
