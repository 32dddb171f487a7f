"""Options: dataclass fields that state their own rule, one check, one hashing rule.

Every option section (a method's ``methods.<name>`` options, the quantizer's ``quant``, the shared
parts of ``task``) is a dataclass that derives from :class:`Options` and makes each field with
:func:`option`::

    @dataclass
    class MyOptions(Options):
        section: ClassVar[str] = "methods.my-ptq"
        batch_size: int = option(64, positive_int, help="images per calibration batch")
        a_range: str = option("", one_of("ema", "mse") | one_of("", text="'' for quant.a_range"), since=2)

:func:`check_options` is the one check: each field's rule, then the class's
``check_combination`` (rules that relate two fields); it runs when the dataclass is built, so
a bad value is one ``UserError`` line naming the key, the value and what is allowed before
any work. :func:`build_options` builds a section from a config mapping (an unknown key is an
error naming the valid ones).

Config hashes follow one rule, with the config version :data:`CONFIG_VERSION`. Each field
declares ``since``, the config version that introduced it, and :func:`hashed_fields` gives
what of a section enters a run's config hash:

- a field with ``hashed=False`` never does (thread counts: how a result is computed, not
  which result it is);
- a field of version 1 always does;
- a field of a later version does only when its value differs from the default it was
  introduced with (the value under which every version-1 config runs as version 1 defined
  it). A subclass that changes such a default (``zaq-official``) keeps the introduced value
  for this comparison.

So a config that sets none of a later version's fields hashes the same under every version,
and one that uses them hashes apart. A field that changes what a run computes is added with
``since=CONFIG_VERSION`` after raising :data:`CONFIG_VERSION` by one (docs/protocol.md, "Config
hashes").
"""
from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from .errors import UserError

#: the config version: the highest ``since`` a field may declare
CONFIG_VERSION = 3

T = TypeVar("T", bound="Options")


@dataclass(frozen=True)
class Rule:
    """A test on one option value and the words for what it allows ("a positive integer")."""

    test: Callable[[Any], bool]
    allowed: str

    def __call__(self, value: Any) -> bool:
        return bool(self.test(value))

    def __or__(self, other: "Rule") -> "Rule":
        return Rule(lambda v: self(v) or other(v), f"{self.allowed}, or {other.allowed}")


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


positive_int = Rule(lambda v: is_int(v) and v >= 1, "a positive integer")
non_negative_int = Rule(lambda v: is_int(v) and v >= 0, "a non-negative integer")
positive = Rule(lambda v: is_number(v) and v > 0, "a finite number > 0")
non_negative = Rule(lambda v: is_number(v) and v >= 0, "a finite number >= 0")
boolean = Rule(lambda v: isinstance(v, bool), "True or False")
fraction = Rule(lambda v: is_number(v) and 0 <= v < 1, "a fraction in [0, 1)")


def one_of(*values: Any, text: str | None = None) -> Rule:
    """One of ``values`` (compared by type as well, so True is not 1); ``text`` names them otherwise."""
    return Rule(lambda v: any(type(v) is type(c) and v == c for c in values),
                text or ", ".join(repr(c) for c in values))


def sequence_of(item: Callable[[Any], bool], allowed: str, length: int | None = None) -> Rule:
    """A list or tuple whose items pass ``item`` (and, if given, of ``length`` items)."""
    return Rule(lambda v: isinstance(v, (list, tuple)) and (length is None or len(v) == length)
                and all(item(x) for x in v), allowed)


def option(default: Any, rule: Rule | None = None, *, since: int = 1, hashed: bool = True,
           recorded: bool = True, help: str = "") -> Any:
    """A dataclass field that declares its rule and its place in hashes and rows.

    Args:
        default: the value a config that does not set the option runs with (immutable).
        rule: what a value must satisfy (None: anything).
        since: the config version that introduced the field (see the module docstring).
        hashed: whether the field can enter the config hash (False for thread counts and
            other settings that do not change what is computed).
        recorded: whether a result row records it in ``extra_metrics`` as ``cfg.<key>=<value>``
            (False for book-keeping such as checkpoint intervals).
        help: one line on what the option does.
    """
    if not 1 <= since <= CONFIG_VERSION:
        raise ValueError(f"since={since} is outside config versions 1..{CONFIG_VERSION}")
    if isinstance(default, (list, dict, set)):
        raise TypeError("an option's default must be immutable (a tuple, not a list)")
    return field(default=default, metadata={"rule": rule, "since": since, "hashed": hashed,
                                            "recorded": recorded, "help": help, "introduced": default})


def redefault(owner: type, name: str, default: Any) -> Any:
    """``owner``'s field ``name`` with another default: a subclass's own default, with the rule,
    version and introduced default (what the hash compares against) of the original field."""
    original = owner.__dataclass_fields__[name]
    return field(default=default, metadata=original.metadata)


class OptionError(UserError):
    """A bad option value; ``{section}`` in the message is the config section it came from."""

    def __init__(self, template: str, section: str = "") -> None:
        self.template = template
        super().__init__(template.replace("{section}", section))

    def at(self, section: str) -> "OptionError":
        """The same error, naming ``section`` (a method's options are checked under its own name)."""
        return OptionError(self.template, section)


class Options:
    """Base of option dataclasses: checked by :func:`check_options` as soon as they are built."""

    #: the config section the fields live in, as error messages name it (e.g. ``methods.zaq``)
    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_options(self)

    def check_combination(self) -> None:
        """Rules between fields; raise :class:`OptionError` (``{section}`` stands for the section)."""


def check_options(obj: Any, section: str | None = None) -> None:
    """The one check of an option section: every field's rule, then ``check_combination``.

    Raises:
        OptionError: one line, ``<section>.<key>=<value> is not valid; use <what is allowed>``.
    """
    where = section if section is not None else getattr(obj, "section", "")
    for f in fields(obj):
        rule = f.metadata.get("rule")
        value = getattr(obj, f.name)
        if rule is not None and not rule(value):
            raise OptionError(f"{{section}}.{f.name}={value!r} is not valid; use {rule.allowed}", where)
    try:
        getattr(obj, "check_combination", lambda: None)()
    except OptionError as err:
        raise err.at(where) from None


def option_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def check_keys(cls: type, values: Mapping[str, Any], section: str | None = None) -> None:
    """An unknown key of a config mapping is one line naming the valid ones."""
    names = option_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = section if section is not None else cls.section
        raise UserError(f"unknown option(s) {unknown} in {where}; valid options: {sorted(names)}")


def build_options(cls: type[T], values: Mapping[str, Any], section: str | None = None) -> T:
    """``cls`` from a config mapping; an unknown key, or a value its rule refuses, is one line
    naming ``section`` (default: the class's)."""
    check_keys(cls, values, section)
    try:
        return cls(**values)
    except OptionError as err:
        raise err.at(section if section is not None else cls.section) from None


def check_value(rule: Rule, value: Any, name: str) -> Any:
    """One value outside a section (a command-line flag): ``<name>=<value> is not valid; use ...``."""
    if not rule(value):
        raise UserError(f"{name}={value!r} is not valid; use {rule.allowed}")
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal as a config value: a list equals the tuple with the same items (1 == 1.0, as in Python)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _enters_hash(f: Field, value: Any) -> bool:
    meta = f.metadata
    if not meta.get("hashed", True):
        return False
    return meta.get("since", 1) == 1 or not _same(value, meta.get("introduced", f.default))


def hashed_fields(obj: Any) -> dict[str, Any]:
    """The fields of ``obj`` that enter a config hash, by the rule of the module docstring,
    with their values as given (the hash is of their JSON)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if _enters_hash(f, getattr(obj, f.name))}


def recorded_fields(obj: Any) -> dict[str, Any]:
    """The hashed fields a result row records (``recorded=True``)."""
    recorded = {f.name for f in fields(obj) if f.metadata.get("recorded", True)}
    return {k: v for k, v in hashed_fields(obj).items() if k in recorded}


def newer_fields(obj: Any) -> dict[str, Any]:
    """The hashed fields of config versions after 1 that are set (those columns made for version 1
    do not show)."""
    newer = {f.name for f in fields(obj) if f.metadata.get("since", 1) > 1}
    return {k: v for k, v in hashed_fields(obj).items() if k in newer}


def hashed_entries(section: Mapping[str, Any], schema: type) -> dict[str, Any]:
    """A raw config section (a mapping that may hold keys ``schema`` does not declare) as it enters
    a hash: the keys ``schema`` declares follow the rule above, the others stay as given."""
    declared = {f.name: f for f in fields(schema)}
    return {k: v for k, v in dict(section).items() if k not in declared or _enters_hash(declared[k], v)}


def check_entries(section: Any, schema: type[T], where: str | None = None) -> T:
    """Check the keys of a raw config section that ``schema`` declares (others are the caller's);
    returns ``schema`` built from them."""
    where = where if where is not None else schema.section
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise UserError(f"{where}={section!r} must be a dict, e.g. {where}.{option_names(schema)[0]}=...")
    names = set(option_names(schema))
    return build_options(schema, {k: v for k, v in section.items() if k in names}, where)


def field_help(cls: type) -> dict[str, str]:
    """Each option's help line (for docs and ``--help`` texts)."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
