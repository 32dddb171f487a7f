"""One comma-list rule for every command: empty items, wrong kinds and repeats are errors."""
import pytest

from zaqbench.run.args import parse_bits, parse_seeds
from zaqbench.run.curves import parse_points
from zaqbench.errors import UserError
from zaqbench.run.lists import parse_list


def test_items_keep_their_order_and_kind():
    assert parse_list(" ptq, zaq ", "--methods") == ["ptq", "zaq"]
    assert parse_list("8,6,4", "--bits", int) == [8, 6, 4]


@pytest.mark.parametrize("text, message", [("", "--seeds is empty"), ("0,,1", "has an empty item"),
                                           ("0,x", "must be comma-separated integers"), ("0,1,0", "repeats 0")])
def test_bad_lists_are_one_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_list(text, "--seeds", int)


def test_the_typed_lists_check_each_item():
    with pytest.raises(UserError, match="repeats 0"):
        parse_seeds("0,0")
    with pytest.raises(UserError, match=r"--bits=9 is not valid; use 2-8, or 16/32"):
        parse_bits("8,9")
    assert parse_points("40,0,10") == [0, 10, 40]
