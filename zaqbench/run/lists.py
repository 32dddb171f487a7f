"""The one comma-list parser of every command (``--bits 8,6,4``, ``--methods ptq,zaq``, ``--seeds 0,1,2``):
an empty item, an item of the wrong kind or a repeated item is one error line naming the option."""
from __future__ import annotations

from typing import Callable, TypeVar

from ..errors import UserError

T = TypeVar("T")


def parse_list(text: str, option: str, convert: Callable[[str], T] = str, example: str = "a,b") -> list[T]:
    """``'a, b,c'`` -> ``[convert('a'), convert('b'), convert('c')]``, in the order given."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise UserError(f"{option} is empty; give at least one value, e.g. {option} {example}")
    if any(not item for item in items):
        raise UserError(f"{option} '{text}' has an empty item; give a comma-separated list, e.g. {option} {example}")
    try:
        values = [convert(item) for item in items]
    except ValueError:
        kind = "integers" if convert is int else "values"
        raise UserError(f"{option} must be comma-separated {kind}, e.g. {option} {example}; got '{text}'") from None
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise UserError(f"{option} '{text}' repeats {', '.join(repeated)}; give each value once")
    return values
