"""Values every store must keep exactly, or refuse before any I/O, shared by the contract suites.

``TYPED_JSON`` holds numbers that JSONB would hand back with another type if written naively
(``1e16`` as the integer 10000000000000000, ``1e300`` as ``10**300``); ``typed`` turns a JSON value
into a form where ``==`` also compares types, so ``1e16 == 10**16`` no longer passes for equal.

The ``UNSTORABLE_*`` values made stores raise ``OverflowError``, ``RecursionError`` or
``PydanticSerializationError`` (or a driver error) instead of ``InvalidDataError``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "LONE_SURROGATE",
    "NUL",
    "TYPED_JSON",
    "UNSTORABLE_TIMESTAMPS",
    "nested",
    "typed",
]

TYPED_JSON: dict[str, Any] = {
    "big": 1e16,
    "huge": 1e300,
    "largest": 1.7976931348623157e308,
    "tiny": 5e-324,
    "negative": -1.5e17,
    "one": 1.0,
    "small": 1.5e-7,
    "int16": 10**16,
    "int30": 10**30,
    "flag": True,
    "list": [1e16, 2, 2.0, -5e20, None, "1e16"],
    "nested": {"f": 1e22, "deeper": [{"g": 3e50}]},
}

LONE_SURROGATE = "\ud800"
NUL = "\x00"

UNSTORABLE_TIMESTAMPS = {
    # 0000-12-31T23:30 in UTC: before datetime.min, so the UTC conversion overflows
    "year-1-with-offset": datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
    # 10000-01-01T00:30 in UTC: after datetime.max
    "year-9999-with-offset": datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))),
}


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` levels of alternating lists and dicts (2,000 levels overflowed
    ``json.dumps`` with ``RecursionError`` and pydantic's serialiser)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def typed(value: Any) -> Any:
    """``value`` with every scalar paired with its type, so ``==`` compares types too."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [typed(item) for item in value]
    return (type(value).__name__, value)
